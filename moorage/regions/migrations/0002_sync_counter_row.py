from django.db import migrations


def create_counter(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("regions", "SyncCounter").objects.get_or_create(pk=1)


class Migration(migrations.Migration):
    """The change log's single revision counter row."""

    dependencies = [("regions", "0001_initial")]

    operations = [migrations.RunPython(create_counter, migrations.RunPython.noop)]
