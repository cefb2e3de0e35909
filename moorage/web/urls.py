from django.urls import path

from moorage.web import views

urlpatterns = [
    path("", views.home, name="home"),
    path("apps/", views.section, {"name": "apps"}, name="apps"),
]
