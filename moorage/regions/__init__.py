"""Regions, the agents that serve them, and the change log agents sync from."""
