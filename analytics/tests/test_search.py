"""Full-text search (`search=`): the database's own engine, the same meaning on SQLite (FTS5)
and PostgreSQL (tsvector): every word must appear, in any order and case; punctuation
separates words; accents count; no prefixes; operators are plain words."""

import pytest
from django.core.management import call_command
from django.db import connection

from proxy.models import SEARCH_HEAD_CHARS, Message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def library(write):
    texts = {
        "sky": ("Why is the sky blue?", "Rayleigh scattering."),
        "grass": ("Why is grass green?", "Chlorophyll absorbs red and blue light."),
        "skyline": ("Describe the skyline of New York.", "Tall towers."),
        "code": ("Rename snake_case variables in state-of-the-art code.", "Done: camelCase."),
        "cafe": ("Ordering at a Café in Paris", "Un café, s'il vous plaît."),
        "version": (
            "Upgrade to v1.2 of the API",
            "See user@example.com or https://example.com/docs",
        ),
    }
    written = write(
        *({"prompt": prompt, "response": response} for prompt, response in texts.values())
    )
    return dict(zip(texts, written, strict=True))


def found(api, library, text, **params) -> set[str]:
    response = api.get("/messages", params={"search": text, **params})
    assert response.status_code == 200, response.text
    names = {message.request_id.hex: name for name, message in library.items()}
    return {names[row["id"]] for row in response.json()["messages"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sky", {"sky"}),
        ("blue", {"sky", "grass"}),  # in a prompt or in a response
        ("blue sky", {"sky"}),  # every word must match
        ("SKY   Blue", {"sky"}),  # any case, any order, any spacing
        ("sky grass", set()),
        ("sky?", {"sky"}),  # punctuation separates words
        ("snake", {"code"}),
        ("case", {"code"}),
        ("state-of-the-art", {"code"}),
        ("art state", {"code"}),
        ("sky*", {"sky"}),  # no prefix search: * is punctuation
        ("sk", set()),  # nor substrings
        ("skylin", set()),
        ("café", {"cafe"}),  # accents count, case folds
        ("CAFÉ", {"cafe"}),
        ("cafe", set()),
        ("v1", {"version"}),
        ("1.2", set()),  # "v1.2" is the words v1 and 2
        ("example", {"version"}),
        ("user example com", {"version"}),
        ("https", {"version"}),
        ("docs", {"version"}),
        ("sky OR grass", set()),  # operators are words: "or" is in neither
        ("NOT sky", set()),
        ('"blue"', {"sky", "grass"}),
        ("blue -sky", {"sky"}),
        ("blue AND", {"grass"}),  # "red and blue light"
        ("s'il", {"cafe"}),
    ],
)
def test_search_means_the_same_on_both_databases(api, library, text, expected):
    assert found(api, library, text) == expected


def test_search_combines_with_other_filters_and_pages(api, write):
    write(*({"prompt": f"question {i} about rust", "model": ("a", "b")[i % 2]} for i in range(7)))

    first = api.get("/messages", params={"search": "rust", "model": "a", "limit": 2}).json()
    rest = api.get(
        "/messages",
        params={"search": "rust", "model": "a", "limit": 2, "cursor": first["next_cursor"]},
    ).json()

    rows = first["messages"] + rest["messages"]
    assert len(rows) == 4
    assert {row["model"] for row in rows} == {"a"}
    assert len({row["id"] for row in rows}) == 4


def test_the_tail_of_a_long_prompt_is_searched_too(api, write):
    filler = "lorem " * (SEARCH_HEAD_CHARS // 3)
    (message,) = write({"prompt": f"opening {filler} middleword {filler} closing"})

    def ids(text):
        return [
            row["id"] for row in api.get("/messages", params={"search": text}).json()["messages"]
        ]

    assert ids("opening") == ids("closing") == [message.request_id.hex]
    # Beyond the head and the tail that are indexed (documented in proxy.models).
    assert ids("middleword") == []


def test_a_deleted_message_leaves_the_index(api, library):
    library["sky"].delete()

    assert found(api, library, "blue") == {"grass"}


def test_a_message_whose_text_changes_is_found_by_its_new_words(api, library):
    Message.objects.filter(pk=library["grass"].pk).update(prompt="Why is the sea salty?")

    assert found(api, library, "salty") == {"grass"}
    assert found(api, library, "green") == set()


def test_the_search_index_is_the_databases_own(library):
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            triggers = {name for (name,) in cursor.fetchall()}
            # A later migration that rebuilds proxy_message on SQLite drops its triggers:
            # this fails then, and the triggers of migration 0003 must be recreated.
            assert {
                "proxy_message_fts_insert",
                "proxy_message_fts_delete",
                "proxy_message_fts_update",
            } <= triggers
            cursor.execute(
                "SELECT count(*) FROM proxy_message_fts WHERE proxy_message_fts MATCH 'blue'"
            )
        else:
            cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'message_search_idx'")
            assert "gin (search_vector)" in cursor.fetchone()[0]
            cursor.execute(
                "SELECT count(*) FROM proxy_message WHERE search_vector @@ 'blue'::tsquery"
            )
        assert cursor.fetchone()[0] == 2


def test_a_word_in_most_messages_pages_like_a_rare_one(api, write):
    # Enough matches that SQLite checks rows in list order instead of reading every match.
    common = write(*({"prompt": f"common word number {i}"} for i in range(1200)))
    write(*({"prompt": "something else"} for _ in range(30)))
    newest_first = [message.request_id.hex for message in reversed(common)]

    seen, cursor = [], None
    for _ in range(3):
        params = {"search": "common", "limit": 400} | ({"cursor": cursor} if cursor else {})
        page = api.get("/messages", params=params).json()
        seen += [row["id"] for row in page["messages"]]
        cursor = page["next_cursor"]

    assert seen == newest_first
    assert cursor is None
    figures = api.get("/aggregations", params={"search": "common"}).json()
    assert figures["total_messages"] == 1200


def test_compacting_the_index_keeps_every_match(api, library):
    call_command("optimize_search_index")

    assert found(api, library, "blue") == {"sky", "grass"}
    assert found(api, library, "café") == {"cafe"}
