"""ASGI entry point, served by uvicorn through ``moorage up``."""

import os
import warnings

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moorage.config.settings")
# WhiteNoise serves files with a synchronous iterator; under ASGI Django warns on every static
# file. The files are small and local, so the cost is nil and the warning only noise.
warnings.filterwarnings("ignore", message="StreamingHttpResponse must consume synchronous")
application = get_asgi_application()
