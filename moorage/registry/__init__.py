"""Talking to container registries, without Django.

Reserved for the credentials issue: image reference parsing, registry host normalisation, the
OCI distribution auth flow (anonymous, Basic, Bearer) and docker config documents. Nothing in
this package may import Django, so the region agent can use it too.
"""
