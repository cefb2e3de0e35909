"""Django settings for Moorage.

Nothing here reads ``os.environ`` directly: every outside value comes from
:mod:`moorage.config.env`, which validates it.
"""

from __future__ import annotations

from moorage.config.env import read_environment
from moorage.registry.policy import ProbePolicy

ENV = read_environment()

DATA_DIR = ENV.data_dir
SECRET_KEY = ENV.secret_key
DEBUG = ENV.debug
ALLOWED_HOSTS = ENV.allowed_hosts
# The keyring that seals secrets: MOORAGE_KEYS when set, else the key file in the data dir.
MOORAGE_KEYS = ENV.keys
MOORAGE_KEY_FILE = DATA_DIR / "keys"
# Limits of every conversation with a registry a tenant named ("Test connection"): networks
# never reached (MOORAGE_PROBE_BLOCKED_NETWORKS), one deadline, a cap on each answer's size.
REGISTRY_PROBE_POLICY = ProbePolicy(blocked_networks=ENV.probe_blocked_networks)
# Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (MOORAGE_TRUSTED_PROXIES);
# `moorage up` hands them to uvicorn. Empty: the socket's peer is the client.
TRUSTED_PROXIES = ENV.trusted_proxies
# A deployment not finished whose region's agent has not been in touch, or has not reported on
# it, for this many seconds is shown stalled (MOORAGE_DEPLOY_STALLED_AFTER; `deploy --follow`
# stops there).
DEPLOY_STALLED_AFTER = ENV.deploy_stalled_after

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "ninja",
    "django_tasks_db",
    "moorage.web",
    "moorage.accounts",
    "moorage.audit",
    "moorage.credentials",
    "moorage.regions",
    "moorage.apps",
    "moorage.deployments",
    "moorage.logs",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "moorage.web.static.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "moorage.accounts.middleware.CurrentAccountMiddleware",
    "moorage.web.errors.ApplicationErrorMiddleware",
]
CSRF_FAILURE_VIEW = "moorage.web.errors.csrf_failure"

ROOT_URLCONF = "moorage.config.urls"
WSGI_APPLICATION = "moorage.config.wsgi.application"
ASGI_APPLICATION = "moorage.config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "moorage.accounts.context_processors.current_account",
            ],
        },
    },
]

DATABASES = {"default": ENV.database}

# Background work (token refreshes) runs in ``moorage worker`` from a queue in the database:
# no broker to run, and it survives restarts.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
# /metrics: with a token, for bearers of it; without, for loopback clients only.
MOORAGE_METRICS_TOKEN = ENV.metrics_token
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 10},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# The embedded default serves static files straight from the apps, no collectstatic step,
# so there is no STATIC_ROOT for WhiteNoise to scan.
STATIC_ROOT = None
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Login attempts (moorage.accounts.services.login_authenticate). Failures are counted per
# (user, address) and per address over a short window, and per user, from every address
# together, over a longer one: that slower ceiling does not apply at an address where the
# user logged in before, so someone guessing elsewhere cannot lock the owner out.
LOGIN_FAILURE_WINDOW_SECONDS = 15 * 60
LOGIN_FAILURES_PER_USER_ADDRESS = 5
LOGIN_FAILURES_PER_ADDRESS = 20
LOGIN_USER_CEILING_WINDOW_SECONDS = 60 * 60
LOGIN_FAILURES_PER_USER = 50
LOGIN_KNOWN_ADDRESS_DAYS = 30
# How long an invitation to an account can be accepted.
INVITATION_DAYS = 7

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        # Request logs of 4xx answers repeat what the API already told the client.
        "django.request": {"level": "ERROR"},
        # A body over the limit is the sender's doing: the 413 handler logs one line
        # (moorage.web.errors); Django's own entry would add a traceback.
        "django.security.RequestDataTooBig": {"level": "CRITICAL"},
        # One line per token exchange ("Found endpoint for ecr via…") is noise.
        "botocore": {"level": "WARNING"},
    },
}
