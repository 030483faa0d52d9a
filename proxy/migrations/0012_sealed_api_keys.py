"""Hosted API keys encrypted in the database (proxy/sealed.py): the column widened for the
token, and the keys already stored sealed; back, they are written in plain text again."""

from django.db import migrations

import proxy.sealed


def seal_stored_keys(apps, schema_editor):
    Backend = apps.get_model("proxy", "Backend")
    for backend in Backend.objects.using(schema_editor.connection.alias).exclude(api_key=""):
        backend.save(update_fields=["api_key"])  # read as it was, written sealed


def unseal_stored_keys(apps, schema_editor):
    Backend = apps.get_model("proxy", "Backend")
    table = schema_editor.quote_name(Backend._meta.db_table)
    with schema_editor.connection.cursor() as cursor:
        for backend in Backend.objects.using(schema_editor.connection.alias).exclude(api_key=""):
            cursor.execute(  # bypassing the field, which would seal it again
                f"UPDATE {table} SET api_key = %s WHERE id = %s", [backend.api_key, backend.pk]
            )


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0011_series_rollups"),
    ]

    operations = [
        migrations.AlterField(
            model_name="backend",
            name="api_key",
            field=proxy.sealed.SealedCharField(
                blank=True, help_text="Sent as Authorization: Bearer to an API.", max_length=1000
            ),
        ),
        migrations.RunPython(seal_stored_keys, unseal_stored_keys),
    ]
