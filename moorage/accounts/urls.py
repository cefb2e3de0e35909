from django.urls import path

from moorage.accounts import views

urlpatterns = [
    path("login/", views.login_view, name="login"),
    path("logout/", views.logout_view, name="logout"),
    path("switch/", views.switch_account, name="switch_account"),
    path("account/", views.account_view, name="account"),
    path("account/rename/", views.account_rename, name="account_rename"),
    path("account/invitations/", views.invitation_create, name="invitation_create"),
    path("account/invitations/<int:invitation_id>/revoke/", views.invitation_revoke,
         name="invitation_revoke"),
    path("invitations/", views.my_invitations, name="invitations"),
    path("invitations/<int:invitation_id>/accept/", views.my_invitation_accept,
         name="invitation_accept"),
    path("invitations/<int:invitation_id>/decline/", views.my_invitation_decline,
         name="invitation_decline"),
    path("account/members/<int:member_id>/role/", views.member_role, name="member_role"),
    path("account/members/<int:member_id>/remove/", views.member_remove, name="member_remove"),
    path("account/tokens/", views.token_create, name="token_create"),
    path("account/tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
    path("account/password/", views.password_change, name="password_change"),
    path("accounts/new/", views.account_new, name="account_new"),
]
