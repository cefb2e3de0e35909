"""URL routing: pages at the root, the REST API under /api/v1, the operators' admin."""

from django.contrib import admin
from django.urls import include, path

from moorage.config.api import api
from moorage.config.metrics import metrics_view

urlpatterns = [
    path("api/v1/", api.urls),
    path("metrics", metrics_view, name="metrics"),
    path("admin/", admin.site.urls),
    path("", include("moorage.accounts.urls")),
    path("", include("moorage.audit.urls")),
    path("", include("moorage.credentials.urls")),
    path("", include("moorage.regions.urls")),
    path("", include("moorage.apps.urls")),
    path("", include("moorage.logs.urls")),
    path("", include("moorage.web.urls")),
]

handler400 = "moorage.web.errors.bad_request"
handler403 = "moorage.web.errors.permission_denied"
handler404 = "moorage.web.errors.page_not_found"
handler500 = "moorage.web.errors.server_error"
