from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "moorage.deployments"
    label = "deployments"
    verbose_name = "Deployments"
