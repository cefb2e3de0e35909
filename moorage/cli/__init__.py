"""The ``moorage`` command: server-side commands (init, up, tokens) and API client commands."""
