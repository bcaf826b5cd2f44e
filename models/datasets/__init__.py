"""Synthetic data for the models and the demo: a seeded Windows event stream with labeled attacks."""
