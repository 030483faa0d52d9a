"""Narrow rollups for faster aggregations (issue 4): the series per time bucket and status,
the user figures per user alone. Filled here from the rollups already kept (their sums
regrouped), so history reads the same from the first request; adding tables never rebuilds
`proxy_message` on SQLite."""

from django.db import migrations, models

SUMS = ("messages", "input_tokens", "output_tokens", "cost_usd")


def fill(table: str, source: str, keys: tuple[str, ...]) -> migrations.RunSQL:
    """Insert `source`'s sums regrouped by `keys` into `table` (same SQL on both databases;
    "user" quoted, a reserved word on PostgreSQL)."""
    columns = ", ".join(f'"{name}"' for name in (*keys, *SUMS))
    grouped = ", ".join(f'"{name}"' for name in keys)
    sums = ", ".join(f'SUM("{name}")' for name in SUMS)
    return migrations.RunSQL(
        f'INSERT INTO "{table}" ({columns}) SELECT {grouped}, {sums} FROM "{source}" '
        f"GROUP BY {grouped}",
        migrations.RunSQL.noop,  # the tables are dropped
    )


def rollup(name: str, key: str, key_field, constraint: str) -> migrations.CreateModel:
    return migrations.CreateModel(
        name=name,
        fields=[
            (
                "id",
                models.BigAutoField(
                    auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                ),
            ),
            ("bucket_seconds", models.PositiveIntegerField()),
            ("bucket_start", models.BigIntegerField()),
            (key, key_field),
            ("messages", models.BigIntegerField(default=0)),
            ("input_tokens", models.BigIntegerField(default=0)),
            ("output_tokens", models.BigIntegerField(default=0)),
            ("cost_usd", models.FloatField(default=0.0)),
        ],
        options={
            "constraints": [
                models.UniqueConstraint(
                    fields=("bucket_seconds", "bucket_start", key), name=constraint
                )
            ],
        },
    )


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0010_reading_performance"),
    ]

    operations = [
        rollup("SeriesRollup", "status", models.CharField(max_length=16), "series_rollup_key"),
        rollup(
            "UserTotalRollup",
            "user",
            models.CharField(blank=True, max_length=255),
            "user_total_rollup_key",
        ),
        fill(
            "proxy_seriesrollup",
            "proxy_messagerollup",
            ("bucket_seconds", "bucket_start", "status"),
        ),
        fill(
            "proxy_usertotalrollup", "proxy_userrollup", ("bucket_seconds", "bucket_start", "user")
        ),
    ]
