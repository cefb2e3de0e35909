"""Settings for the test suite: the real settings, with a throw-away data dir.

Tests pick the database with ``DATABASE_URL`` exactly as production does, so the same suite
runs on SQLite (unset) and on PostgreSQL.
"""

from __future__ import annotations

import os
import tempfile

# A fixed key keeps tests from writing a key file; the data dir is never the user's own.
os.environ.setdefault("MOORAGE_SECRET_KEY", "test-secret-key-" + "x" * 40)
os.environ.setdefault("MOORAGE_DATA_DIR", os.path.join(tempfile.gettempdir(), "moorage-tests"))

from moorage.config.settings import *  # noqa: F403

# Hashing with the production hasher is slow by design; tests only need a real one-way hash.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
