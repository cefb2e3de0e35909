from django.urls import path

from moorage.web import views

urlpatterns = [
    path("", views.home, name="home"),
]
