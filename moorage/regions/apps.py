from django.apps import AppConfig


class RegionsConfig(AppConfig):
    name = "moorage.regions"
    label = "regions"
    verbose_name = "Regions"
