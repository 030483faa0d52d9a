"""The default category rules; edit them in the admin (Proxy > Category rules).

First match by priority wins; a message no rule matches is `other`.
"""

from django.db import migrations

DEFAULT_RULES = [
    # An explicit `X-Category: name` header from the client names the category itself.
    (10, "", "header", "X-Category", "regex", r"^\s*(?P<category>[A-Za-z0-9_-]{1,64})\s*$"),
    (20, "embedding", "endpoint", "", "regex", r"embed"),
    (
        30,
        "code",
        "prompt",
        "",
        "keywords",
        "python, javascript, typescript, golang, rust, java, c++, sql, regex, function, code, "
        "bug, debug, compile, compiler, stack trace, traceback, refactor, unit test, exception, "
        "dockerfile, bash script, shell script",
    ),
    (31, "code", "prompt", "", "regex", r"```|\bdef \w+\(|#include|console\.log\(|SELECT .+ FROM "),
    (
        40,
        "translation",
        "prompt",
        "",
        "keywords",
        "translate, translation, translated, traduire, traduce, übersetze, übersetzen, "
        "into english, into french, into spanish, into german, into italian, into chinese, "
        "into japanese, in french, in spanish, in german",
    ),
    (
        50,
        "summarisation",
        "prompt",
        "",
        "keywords",
        "summarize, summarise, summary, summarization, summarisation, tl;dr, tldr, "
        "key points, main points, in a nutshell, condense, recap",
    ),
    (
        60,
        "extraction",
        "prompt",
        "",
        "keywords",
        "extract, extraction, named entities, entities, pull out, list all, as json, "
        "into json, structured data, fill the fields, parse this",
    ),
    (
        70,
        "classification",
        "prompt",
        "",
        "keywords",
        "classify, classification, categorize, categorise, sentiment, which category, label this",
    ),
    (80, "chat", "endpoint", "", "regex", r"chat"),
    (90, "completion", "endpoint", "", "regex", r"generate|completions"),
]


def create_rules(apps, schema_editor):
    CategoryRule = apps.get_model("proxy", "CategoryRule")
    CategoryRule.objects.bulk_create(
        CategoryRule(
            priority=priority,
            category=category,
            field=field,
            header=header,
            match=match,
            pattern=pattern,
        )
        for priority, category, field, header, match, pattern in DEFAULT_RULES
    )


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0003_message_search"),
    ]

    operations = [
        migrations.RunPython(create_rules, migrations.RunPython.noop),
    ]
