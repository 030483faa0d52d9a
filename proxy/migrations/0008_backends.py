"""Backends for hybrid routing (issue 8): the Backend table, and which backend a message and a
price are about.

On SQLite, Django adds a NOT NULL column by rebuilding the table, which would drop the search
triggers of 0003: `Message.backend` is added in place there, with `ALTER TABLE ... ADD COLUMN`
and a default for the rows already stored.
"""

from django.db import migrations, models


def _backend_field():
    field = models.CharField(blank=True, default="", max_length=64)
    field.set_attributes_from_name("backend")
    return field


def add_backend_column(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(
            "ALTER TABLE proxy_message ADD COLUMN backend varchar(64) NOT NULL DEFAULT ''"
        )
    else:
        schema_editor.add_field(apps.get_model("proxy", "Message"), _backend_field())


def drop_backend_column(apps, schema_editor):
    if schema_editor.connection.vendor == "sqlite":
        schema_editor.execute("ALTER TABLE proxy_message DROP COLUMN backend")
    else:
        schema_editor.remove_field(apps.get_model("proxy", "Message"), _backend_field())


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0007_search_statistics"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name="message",
                    name="backend",
                    field=models.CharField(blank=True, max_length=64),
                ),
            ],
            database_operations=[
                migrations.RunPython(add_backend_column, drop_backend_column, elidable=False),
            ],
        ),
        migrations.AddField(
            model_name="modelprice",
            name="backend",
            field=models.CharField(
                blank=True,
                help_text="Only for messages this backend served (its name, as on messages); "
                "empty for any backend. A price naming the backend wins over one that does not.",
                max_length=64,
            ),
        ),
        migrations.CreateModel(
            name="Backend",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        help_text="Lowercase letters, digits, ., - and _; names the backend on "
                        "messages, prices and metrics.",
                        max_length=64,
                        unique=True,
                    ),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[("ollama", "Ollama"), ("openai", "OpenAI-compatible API")],
                        default="ollama",
                        max_length=16,
                    ),
                ),
                (
                    "url",
                    models.URLField(
                        help_text="Ollama: its address, e.g. http://gpu-2:11434. "
                        "OpenAI-compatible: the base URL the /v1 paths hang off, e.g. "
                        "https://api.openai.com/v1.",
                        max_length=500,
                    ),
                ),
                (
                    "api_key",
                    models.CharField(
                        blank=True,
                        help_text="Sent as Authorization: Bearer to an API.",
                        max_length=500,
                    ),
                ),
                (
                    "model_names",
                    models.TextField(
                        blank=True,
                        help_text="Models it serves, one per line or comma-separated; * is a "
                        "wildcard (gpt-4o*). Empty: what its /api/tags or /v1/models lists.",
                    ),
                ),
                (
                    "priority",
                    models.IntegerField(
                        default=100,
                        help_text="Lower is tried first; equal priorities share the load.",
                    ),
                ),
                (
                    "weight",
                    models.PositiveSmallIntegerField(
                        default=1, help_text="Share of the load among backends of equal priority."
                    ),
                ),
                ("enabled", models.BooleanField(default=True)),
                ("healthy", models.BooleanField(editable=False, null=True)),
                ("checked_at", models.DateTimeField(editable=False, null=True)),
                ("health_error", models.CharField(blank=True, editable=False, max_length=255)),
                (
                    "discovered_models",
                    models.JSONField(blank=True, default=list, editable=False),
                ),
            ],
            options={
                "ordering": ["priority", "name"],
            },
        ),
    ]
