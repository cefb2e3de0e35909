"""Moorage: a self-hostable PaaS control plane.

Its centre is account-level container-registry credentials: stored once, encrypted, synced to
every region, selected per app, and used to authenticate image pulls and base-image pulls.
"""

__version__ = "0.1.0"
