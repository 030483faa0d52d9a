"""Conversations (issue 10): the Conversation table, and on each message its conversation, the
message whose history it continues and the hashes the next turn looks it up by.

Every new message column is nullable without a default, so SQLite adds it in place rather than
rebuilding the table (a rebuild would drop the search triggers of 0003).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0008_backends"),
    ]

    operations = [
        migrations.CreateModel(
            name="Conversation",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "external_id",
                    models.CharField(
                        blank=True,
                        help_text="The id the client sent, if it sent one.",
                        max_length=255,
                    ),
                ),
                ("user", models.CharField(blank=True, max_length=255)),
                (
                    "model",
                    models.CharField(
                        blank=True, help_text="The model of the last turn.", max_length=255
                    ),
                ),
                ("started_at", models.DateTimeField()),
                ("last_at", models.DateTimeField()),
                (
                    "turns",
                    models.PositiveIntegerField(
                        default=0, help_text="Messages in the conversation."
                    ),
                ),
                (
                    "errors",
                    models.PositiveIntegerField(default=0, help_text="Of them, not successful."),
                ),
                ("input_tokens", models.BigIntegerField(default=0)),
                ("output_tokens", models.BigIntegerField(default=0)),
                ("cost_usd", models.FloatField(default=0.0)),
                ("latency_seconds", models.FloatField(default=0.0)),
            ],
            options={
                "ordering": ["-last_at", "-id"],
                "indexes": [
                    models.Index(fields=["-last_at", "-id"], name="conversation_recent_idx")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("external_id", ""), _negated=True),
                        fields=("user", "external_id"),
                        name="conversation_external_id",
                    )
                ],
            },
        ),
        migrations.AddField(
            model_name="message",
            name="conversation",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="messages",
                to="proxy.conversation",
            ),
        ),
        migrations.AddField(
            model_name="message",
            name="previous_request_id",
            field=models.UUIDField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="history_turns",
            field=models.PositiveIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="request_hash",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="message",
            name="history_hash",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                fields=["conversation", "timestamp"], name="message_conversation_idx"
            ),
        ),
        migrations.AddField(
            model_name="message",
            name="parent_hash",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("request_hash__isnull", False)),
                fields=["request_hash"],
                name="message_request_hash_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("history_hash__isnull", False)),
                fields=["history_hash"],
                name="message_history_hash_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("parent_hash__isnull", False)),
                fields=["parent_hash"],
                name="message_parent_hash_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("previous_request_id__isnull", False)),
                fields=["previous_request_id"],
                name="message_previous_idx",
            ),
        ),
    ]
