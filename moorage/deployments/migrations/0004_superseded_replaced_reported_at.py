
from typing import Any

from django.conf import settings
from django.db import migrations, models


def settle_history(apps: Any, schema_editor: Any) -> None:
    """Before one deployment per app and region may be running: the older running ones
    became ``replaced``, and queued ones older than one that started will never start
    (``superseded``)."""
    Deployment = apps.get_model("deployments", "Deployment")
    newest_running: dict[tuple[int, int], int] = {}
    newest_started: dict[tuple[int, int], int] = {}
    for app_id, region_id, number, status in Deployment.objects.values_list(
            "app_id", "region_id", "number", "status"):
        key = (app_id, region_id)
        if status == "running":
            newest_running[key] = max(newest_running.get(key, 0), number)
        if status != "queued":
            newest_started[key] = max(newest_started.get(key, 0), number)
    for (app_id, region_id), number in newest_running.items():
        Deployment.objects.filter(app_id=app_id, region_id=region_id, status="running",
                                  number__lt=number).update(status="replaced")
    for (app_id, region_id), number in newest_started.items():
        Deployment.objects.filter(app_id=app_id, region_id=region_id, status="queued",
                                  number__lt=number).update(status="superseded")


class Migration(migrations.Migration):

    dependencies = [
        ('apps', '0003_source_archive'),
        ('credentials', '0003_login_sources'),
        ('deployments', '0003_deployment_default_host'),
        ('regions', '0006_region_registry_nodes_running_services'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='deployment',
            name='reported_at',
            field=models.DateTimeField(blank=True, help_text='When its agent last reported on it (a deployment no report moves for long is shown stalled).', null=True),
        ),
        migrations.AlterField(
            model_name='deployment',
            name='started_at',
            field=models.DateTimeField(blank=True, help_text='When its agent started it (its first report).', null=True),
        ),
        migrations.AlterField(
            model_name='deployment',
            name='status',
            field=models.CharField(choices=[('queued', 'Queued'), ('building', 'Building'), ('pulling', 'Pulling'), ('starting', 'Starting'), ('running', 'Running'), ('failed', 'Failed'), ('superseded', 'Superseded'), ('replaced', 'Replaced')], default='queued', max_length=16),
        ),
        migrations.RunPython(settle_history, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='deployment',
            constraint=models.UniqueConstraint(condition=models.Q(('status', 'running')), fields=('app', 'region'), name='deployment_one_running'),
        ),
    ]
