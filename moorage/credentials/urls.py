from django.urls import path

from moorage.credentials import views

urlpatterns = [
    path("credentials/", views.credential_list, name="credentials"),
    path("credentials/new/", views.credential_new, name="credential_new"),
    path("credentials/<int:credential_id>/edit/", views.credential_edit, name="credential_edit"),
    path("credentials/<int:credential_id>/secret/", views.credential_replace_secret,
         name="credential_replace_secret"),
    path("credentials/<int:credential_id>/set-default/", views.credential_set_default,
         name="credential_set_default"),
    path("credentials/<int:credential_id>/delete/", views.credential_delete,
         name="credential_delete"),
    path("credentials/<int:credential_id>/test/", views.credential_test, name="credential_test"),
    path("credentials/<int:credential_id>/refresh/", views.credential_refresh,
         name="credential_refresh"),
]
