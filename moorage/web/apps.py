from django.apps import AppConfig


class WebConfig(AppConfig):
    name = "moorage.web"
    label = "web"
    verbose_name = "Web"

    def ready(self) -> None:
        from django.core.signals import request_finished

        from moorage.config.metrics import refresh_pool_gauges

        # Each process keeps its pool gauges current as it serves (see config/metrics.py).
        request_finished.connect(refresh_pool_gauges, dispatch_uid="moorage-pool-gauges")
