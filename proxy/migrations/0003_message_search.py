"""Full-text search on prompt and response, through each database's own engine.

PostgreSQL: a stored generated tsvector column `search_vector` and a GIN index on it.
SQLite: a contentless FTS5 table `proxy_message_fts` kept in sync by triggers.

Both index the same words with the same rules, so a search means the same on both: text is
bounded to the head and tail 25,000 characters (proxy.models.SEARCH_HEAD_CHARS / _TAIL_CHARS),
every run of characters that are not letters or digits separates words, and words are
lowercased without removing accents (PostgreSQL's `simple` configuration; FTS5's unicode61
with remove_diacritics 0). Queries give the words, every one must match.
"""

from django.db import migrations

HEAD, TAIL = 25_000, 25_000


def _bounded_postgresql(column):
    return (
        f"CASE WHEN length({column}) <= {HEAD + TAIL} THEN {column} "
        f"ELSE left({column}, {HEAD}) || ' ' || right({column}, {TAIL}) END"
    )


def _bounded_sqlite(column):
    return (
        f"CASE WHEN length({column}) <= {HEAD + TAIL} THEN {column} "
        f"ELSE substr({column}, 1, {HEAD}) || ' ' || substr({column}, -{TAIL}) END"
    )


POSTGRESQL_FORWARD = [
    f"""
    ALTER TABLE proxy_message ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig, regexp_replace(
            {_bounded_postgresql("prompt")} || ' ' || {_bounded_postgresql("response")},
            '[^[:alnum:]]+', ' ', 'g'))
    ) STORED
    """,
    "CREATE INDEX message_search_idx ON proxy_message USING gin (search_vector)",
]
POSTGRESQL_BACKWARD = [
    "DROP INDEX IF EXISTS message_search_idx",
    "ALTER TABLE proxy_message DROP COLUMN IF EXISTS search_vector",
]


def _sqlite_values(row):
    return f"{_bounded_sqlite(f'{row}.prompt')}, {_bounded_sqlite(f'{row}.response')}"


SQLITE_FORWARD = [
    "CREATE VIRTUAL TABLE proxy_message_fts USING fts5("
    "prompt, response, content='', tokenize='unicode61 remove_diacritics 0')",
    # A contentless table forgets a row only when given the very values it indexed.
    f"""
    CREATE TRIGGER proxy_message_fts_insert AFTER INSERT ON proxy_message BEGIN
        INSERT INTO proxy_message_fts (rowid, prompt, response)
        VALUES (new.id, {_sqlite_values("new")});
    END
    """,
    f"""
    CREATE TRIGGER proxy_message_fts_delete AFTER DELETE ON proxy_message BEGIN
        INSERT INTO proxy_message_fts (proxy_message_fts, rowid, prompt, response)
        VALUES ('delete', old.id, {_sqlite_values("old")});
    END
    """,
    f"""
    CREATE TRIGGER proxy_message_fts_update AFTER UPDATE OF prompt, response ON proxy_message
    BEGIN
        INSERT INTO proxy_message_fts (proxy_message_fts, rowid, prompt, response)
        VALUES ('delete', old.id, {_sqlite_values("old")});
        INSERT INTO proxy_message_fts (rowid, prompt, response)
        VALUES (new.id, {_sqlite_values("new")});
    END
    """,
    f"""
    INSERT INTO proxy_message_fts (rowid, prompt, response)
    SELECT id, {_sqlite_values("proxy_message")} FROM proxy_message
    """,
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS proxy_message_fts_update",
    "DROP TRIGGER IF EXISTS proxy_message_fts_delete",
    "DROP TRIGGER IF EXISTS proxy_message_fts_insert",
    "DROP TABLE IF EXISTS proxy_message_fts",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        for statement in statements_by_vendor.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("proxy", "0002_rollups_costs_categories"),
    ]

    operations = [
        migrations.RunPython(
            _run({"postgresql": POSTGRESQL_FORWARD, "sqlite": SQLITE_FORWARD}),
            _run({"postgresql": POSTGRESQL_BACKWARD, "sqlite": SQLITE_BACKWARD}),
        ),
    ]
