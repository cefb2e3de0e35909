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
# A keyring for this test process only: nothing sealed in a test outlives it.
if "MOORAGE_KEYS" not in os.environ:
    from moorage.sealing import generate_key

    os.environ["MOORAGE_KEYS"] = generate_key("test").encoded()

from moorage.config.settings import *  # noqa: F403

# Hashing with the production hasher is slow by design; tests only need a real one-way hash.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not Django's default in-memory database: threads then get their own connections
    # with real locking (IMMEDIATE transactions, WAL), as the embedded default runs.
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(
            os.environ["MOORAGE_DATA_DIR"], f"test-{os.getpid()}.sqlite3"
        )
    }
