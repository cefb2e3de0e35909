from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "moorage.web"
    label = "web"
    verbose_name = "Web"
