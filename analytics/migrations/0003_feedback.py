"""Feedback on messages (issue 10): the table, and the permissions to send feedback and to see
the feedback list for the groups of migration 0002, plus a group for apps that only send it."""

import django.db.models.deletion
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations, models

# Analysts and auditors rate what they read and see the feedback list; a "Feedback sender" is
# an app's account (e.g. a chat front end relaying its users' thumbs) that may send feedback
# and read nothing.
GROUPS = {
    "Analyst": ("send_feedback", "view_feedback"),
    "Auditor": ("send_feedback", "view_feedback"),
    "Feedback sender": ("send_feedback",),
}


def grant(apps, schema_editor):
    # As in 0002: permissions are made after all migrations; a fresh database needs them now.
    for app_config in apps.get_app_configs():
        models_module = getattr(app_config, "models_module", None)
        app_config.models_module = models_module or True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = models_module
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUPS.items():
        Group.objects.get_or_create(name=name)[0].permissions.add(
            *Permission.objects.filter(content_type__app_label="analytics", codename__in=codenames)
        )
    # Admin has everything of analytics (0002), so the new model's permissions too.
    admin, _ = Group.objects.get_or_create(name="Admin")
    admin.permissions.add(
        *Permission.objects.filter(
            content_type__app_label="analytics", content_type__model="feedback"
        )
    )


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Group.objects.filter(name="Feedback sender").delete()
    Permission = apps.get_model("auth", "Permission")
    Permission.objects.filter(
        content_type__app_label="analytics", content_type__model="feedback"
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0002_reader_groups"),
        ("proxy", "0010_reading_performance"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="Feedback",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("model", models.CharField(blank=True, editable=False, max_length=255)),
                ("message_timestamp", models.DateTimeField(editable=False)),
                (
                    "source",
                    models.CharField(
                        help_text="Who or what rated, e.g. open-webui or alice.", max_length=64
                    ),
                ),
                (
                    "scale",
                    models.CharField(
                        choices=[("thumbs", "Thumbs"), ("stars", "Stars")], max_length=8
                    ),
                ),
                (
                    "value",
                    models.PositiveSmallIntegerField(
                        help_text="Thumbs: 0 down, 1 up. Stars: 1 to 5."
                    ),
                ),
                (
                    "score",
                    models.FloatField(help_text="0 (worst) to 1 (best), whatever the scale."),
                ),
                ("comment", models.TextField(blank=True, max_length=2000)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "message",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="feedback",
                        to="proxy.message",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        help_text="Whose session or API token sent it.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name_plural": "feedback",
                "ordering": ["-updated_at", "-id"],
                "permissions": [("send_feedback", "Can send feedback on messages")],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("message", "source"), name="feedback_message_source"
                    ),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("scale", "thumbs"), ("value__lte", 1)),
                            models.Q(("scale", "stars"), ("value__gte", 1), ("value__lte", 5)),
                            _connector="OR",
                        ),
                        name="feedback_rating_in_scale",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("score__gte", 0), ("score__lte", 1)),
                        name="feedback_score_0_to_1",
                    ),
                ],
                "indexes": [
                    models.Index(
                        fields=["message_timestamp", "model", "score"],
                        name="feedback_time_model_idx",
                    ),
                ],
            },
        ),
        migrations.RunPython(grant, revoke),
    ]
