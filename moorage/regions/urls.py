from django.urls import path

from moorage.regions import views

urlpatterns = [
    path("regions/", views.region_list, name="regions"),
    path("regions/add/", views.region_add, name="region_add"),
    path("regions/account/", views.account_regions, name="account_regions"),
    path("regions/account/redeploy/", views.account_apps_redeploy,
         name="account_apps_redeploy"),
    path("regions/<slug:slug>/rotate-token/", views.region_rotate_token,
         name="region_rotate_token"),
    path("regions/<slug:slug>/remove/", views.region_remove, name="region_remove"),
]
