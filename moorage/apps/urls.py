from django.urls import path

from moorage.apps import views

urlpatterns = [
    path("apps/", views.app_list, name="apps"),
    path("apps/new/", views.app_new, name="app_new"),
    path("apps/preview/", views.app_preview, name="app_preview"),
    path("apps/<int:app_id>/", views.app_detail, name="app_detail"),
    path("apps/<int:app_id>/source/", views.app_source_upload, name="app_source_upload"),
    path("apps/<int:app_id>/deploy/", views.app_deploy, name="app_deploy"),
    path("apps/<int:app_id>/deployments/", views.app_deployments, name="app_deployments"),
    path("apps/<int:app_id>/delete/", views.app_delete, name="app_delete"),
    path("deployments/<int:deployment_id>/log/", views.deployment_log, name="deployment_log"),
]
