"""Conversations (issue 10); filled in by the conversations work."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0008_backends"),
    ]

    operations = []
