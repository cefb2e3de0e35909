from django.urls import path

from moorage.web import views

urlpatterns = [
    path("", views.home, name="home"),
    path("apps/", views.section, {"name": "apps"}, name="apps"),
    path("credentials/", views.section, {"name": "credentials"}, name="credentials"),
    path("regions/", views.section, {"name": "regions"}, name="regions"),
]
