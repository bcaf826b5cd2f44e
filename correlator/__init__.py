"""The correlator: fuses Sigma rule hits.

Modules import what they need (this package init imports nothing, so a light module does not pull
in pySigma). The Sigma correlation engine: `correlator.correlations.CorrelationEngine` over
`correlator.records.Hit`, giving `correlator.records.CorrelationHit`.
"""
