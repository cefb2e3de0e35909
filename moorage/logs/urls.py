from django.urls import path

from moorage.logs import views

urlpatterns = [
    path("apps/<int:app_id>/logs/", views.app_logs, name="app_logs"),
    path("apps/<int:app_id>/logs/<int:request_id>/", views.app_log_lines,
         name="app_log_lines"),
]
