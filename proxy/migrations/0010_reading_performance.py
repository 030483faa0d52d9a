"""Indexes or tables for faster aggregations (issue 4)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0009_conversations"),
    ]

    operations = []
