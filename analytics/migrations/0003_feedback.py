"""Feedback on messages (issue 10)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0002_reader_groups"),
        ("proxy", "0010_reading_performance"),
    ]

    operations = []
