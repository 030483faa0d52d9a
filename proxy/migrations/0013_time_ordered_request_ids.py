"""New messages get time-ordered request ids (proxy/ids.py). The default is Python's, not the
database's, so the schema is unchanged: state only. (An AlterField would make SQLite copy the
whole messages table, and dropping the old table would drop the search index's triggers.)"""

from django.db import migrations, models

import proxy.ids


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0012_sealed_api_keys"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="request_id",
                    field=models.UUIDField(default=proxy.ids.uuid7, editable=False, unique=True),
                ),
            ],
        ),
    ]
