from django.apps import AppConfig


class AppsConfig(AppConfig):
    name = "moorage.apps"
    label = "apps"
    verbose_name = "Apps"
