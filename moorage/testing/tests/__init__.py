"""Proofs that the real-component fixtures of :mod:`moorage.testing` behave as documented."""
