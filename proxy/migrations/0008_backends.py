"""Backends for hybrid routing (issue 8); filled in by the routing work."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0007_search_statistics"),
    ]

    operations = []
