from django.apps import AppConfig


class CredentialsConfig(AppConfig):
    name = "moorage.credentials"
    label = "credentials"
    verbose_name = "Credentials"
