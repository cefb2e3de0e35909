from django.urls import path

from moorage.audit import views

urlpatterns = [path("activity/", views.activity, name="activity")]
