"""The region agent, without Django.

Reserved for the regions issue. Layers: ``client`` (talks to the control plane), ``sync`` (the
reconcile loop) and ``runtime`` (wraps the Docker Engine API). Configuration is passed in, never
read from the environment deep inside.
"""
