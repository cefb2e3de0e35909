"""Real-component test support for Moorage.

Starts the real things the design's "Real components in tests" section asks for — Debian's
``docker-registry`` (Basic and Bearer-token auth), a private ``dockerd``, busybox test images
and a headless Chromium — and exposes them as pytest fixtures through
``pytest_plugins = ["moorage.testing.fixtures"]``. Nothing here is imported by production code.
"""
