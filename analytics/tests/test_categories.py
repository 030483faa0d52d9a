"""Categories: the writer applies the admin's rules (keywords or regex on the prompt, model,
endpoint, user or a request header); `manage.py recategorize` re-applies them to history."""

import ollama
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from proxy.models import CategoryRule, Message

pytestmark = pytest.mark.django_db(transaction=True)


def recorded(server) -> Message:
    server.flush()
    return Message.objects.latest("id")


def ask(server, text, headers=None, model="llama3.2") -> str:
    client = ollama.Client(host=server.url, headers=headers or {})
    client.chat(model=model, messages=[{"role": "user", "content": text}])
    return recorded(server).category


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Write a Python function that reverses a list", "code"),
        ("Why does this print undefined?\n```js\nconsole.log(x)\n```", "code"),
        ("Translate 'good morning' into French", "translation"),
        ("Summarize this article in three bullet points: ...", "summarisation"),
        ("Extract the names and dates as JSON from this email", "extraction"),
        ("Classify the sentiment of: I loved it", "classification"),
        ("Tell me a joke about penguins", "chat"),
    ],
)
def test_the_default_rules_categorise_chats(server, default_rules, text, category):
    assert ask(server, text) == category


def test_embeddings_and_completions_have_their_own_categories(server, default_rules):
    client = ollama.Client(host=server.url)

    client.embed(model="all-minilm", input="Write a python function")
    assert recorded(server).category == "embedding"
    client.generate(model="llama3.2", prompt="Once upon a time")
    assert recorded(server).category == "completion"


def test_an_x_category_header_names_the_category(server, default_rules):
    assert ask(server, "Write a python function", {"X-Category": "Billing"}) == "billing"


def test_a_message_no_rule_matches_is_other(server):
    assert ask(server, "Tell me a joke") == "other"


def test_a_rule_added_in_the_admin_applies_to_the_next_message(server, default_rules):
    assert ask(server, "Review this contract clause") == "chat"

    CategoryRule.objects.create(category="legal", pattern="contract, NDA", priority=1)

    assert ask(server, "Review this contract clause") == "legal"
    assert ask(server, "Draft an nda for me") == "legal"  # whole words, any case
    assert ask(server, "Review these contracts") == "chat"  # whole words only


def test_regex_rules_on_model_and_user_and_a_category_taken_from_the_match(server):
    CategoryRule.objects.create(category="vision", field="model", match="regex", pattern="^llava")
    CategoryRule.objects.create(
        field="user", match="regex", pattern=r"^team-(?P<category>\w+)@", priority=200
    )

    assert ask(server, "What is in this picture?", model="llava") == "vision"
    assert ask(server, "hi") == "other"
    CategoryRule.objects.create(
        field="header", header="X-OpenWebUI-User-Email", match="regex",
        pattern=r"^team-(?P<category>\w+)@",
    )  # fmt: skip
    assert ask(server, "hi", {"X-OpenWebUI-User-Email": "team-Support@example.com"}) == "support"


def test_a_disabled_rule_is_skipped(server):
    CategoryRule.objects.create(category="legal", pattern="contract", enabled=False)

    assert ask(server, "Review this contract") == "other"


@pytest.mark.parametrize(
    ("fields", "complaint"),
    [
        ({"field": "header", "header": "Authorization", "pattern": "x"}, "Credential headers"),
        ({"field": "header", "header": "", "pattern": "x"}, "Name the header"),
        ({"match": "regex", "pattern": "(unclosed"}, "Not a valid regular expression"),
        ({"pattern": " , ,"}, "at least one keyword"),
        ({"category": "", "pattern": "word"}, "(?P<category>"),
    ],
)
def test_a_rule_that_cannot_work_is_refused(fields, complaint):
    rule = CategoryRule(**{"category": "x", **fields})

    with pytest.raises(ValidationError, match=complaint.replace("(", r"\(").replace("?", r"\?")):
        rule.full_clean()


def test_recategorize_applies_new_rules_to_history_and_its_aggregations(
    api, write, default_rules, capsys
):
    write(
        {"prompt": "Review this contract", "category": "chat"},
        {"prompt": "Review this contract", "category": "billing"},  # from an X-Category header
        {"prompt": "Tell me a joke", "category": "chat"},
    )
    CategoryRule.objects.create(category="legal", pattern="contract", priority=1)

    call_command("recategorize")

    assert sorted(Message.objects.values_list("category", flat=True)) == [
        "billing",
        "chat",
        "legal",
    ]
    assert "Recategorised 1 message(s), kept 1" in capsys.readouterr().out
    by_category = {
        row["category"]: row["messages"] for row in api.get("/aggregations").json()["by_category"]
    }
    assert by_category == {"billing": 1, "chat": 1, "legal": 1}

    call_command("recategorize", "--all")

    assert sorted(Message.objects.values_list("category", flat=True)) == ["chat", "legal", "legal"]
