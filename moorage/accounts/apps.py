from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "moorage.accounts"
    label = "accounts"
    verbose_name = "Accounts"
