from django.apps import AppConfig


class LogsConfig(AppConfig):
    name = "moorage.logs"
    label = "logs"
    verbose_name = "App logs"
