from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "moorage.audit"
    label = "audit"
    verbose_name = "Audit"
