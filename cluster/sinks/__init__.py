"""Where alerts go after the correlator: `cluster.sinks.webhook.WebhookSink` POSTs each alert's
OCSF Detection Finding to a SOAR / ticketing endpoint, signed with a shared secret (HMAC-SHA256),
with retries, a bounded queue and a dead-letter hand-off for what cannot be delivered.

Standard library only (http.client): no Kafka, no Ray.
"""

from __future__ import annotations

from cluster.sinks.webhook import WebhookSink, sign, verify_signature

__all__ = ["WebhookSink", "sign", "verify_signature"]
