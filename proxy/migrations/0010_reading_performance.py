"""Indexes or tables for faster aggregations (issue 4): the user figures of a bounded range
read from an index alone."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0009_conversations"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="userrollup",
            index=models.Index(
                fields=[
                    "bucket_seconds",
                    "bucket_start",
                    "user",
                    "model",
                    "status",
                    "messages",
                    "input_tokens",
                    "output_tokens",
                    "cost_usd",
                ],
                name="user_rollup_range_idx",
            ),
        ),
    ]
