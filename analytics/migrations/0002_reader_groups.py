"""The groups of people who read recorded messages: Analyst (metadata and charts), Auditor (also
prompt and response text) and Admin (everything of proxy and analytics, deleting included)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUPS = {
    "Analyst": [("proxy", "view_message")],
    "Auditor": [("proxy", "view_message"), ("proxy", "view_message_content")],
}
ADMIN_APPS = ("proxy", "analytics")


def create_groups(apps, schema_editor):
    # Permissions are made after all migrations (post_migrate); a fresh database needs them now.
    # (A migration's app configs have no models module, which create_permissions requires.)
    for app_config in apps.get_app_configs():
        models_module = getattr(app_config, "models_module", None)
        app_config.models_module = models_module or True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = models_module
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        for app_label, codename in codenames:
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
    admin, _ = Group.objects.get_or_create(name="Admin")
    admin.permissions.add(*Permission.objects.filter(content_type__app_label__in=ADMIN_APPS))


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=[*GROUPS, "Admin"]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0001_initial"),
        ("proxy", "0006_rollup_reading_indexes"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_groups, remove_groups)]
