"""Hosted API keys encrypted in the database: what a dump holds is a token, the proxy reads the
key; a changed SECRET_KEY with the old one as a fallback still opens it, without one it reads
as empty with an error; the migration seals keys stored before and unseals them going back."""

import importlib
import logging
import secrets

import pytest
from django.apps import apps
from django.db import connection

from proxy import sealed
from proxy.models import Backend

pytestmark = pytest.mark.django_db(transaction=True)

migration = importlib.import_module("proxy.migrations.0012_sealed_api_keys")


def stored(backend: Backend) -> str:
    """The column as a dump or a replica has it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT api_key FROM proxy_backend WHERE id = %s", [backend.pk])
        return cursor.fetchone()[0]


def write_plain(backend: Backend, text: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("UPDATE proxy_backend SET api_key = %s WHERE id = %s", [text, backend.pk])


def hosted(key: str, name: str = "hosted") -> Backend:
    return Backend.objects.create(
        name=name, kind=Backend.Kind.OPENAI, url="https://api.example.com/v1", api_key=key
    )


def test_the_database_holds_a_token_and_the_proxy_reads_the_key():
    key = "sk-" + secrets.token_urlsafe(32)
    backend = hosted(key)

    raw = stored(backend)
    assert raw.startswith(sealed.PREFIX) and key not in raw
    assert Backend.objects.get().api_key == key
    assert list(Backend.objects.values_list("api_key", flat=True)) == [key]

    backend.refresh_from_db()
    backend.save()  # saved again: sealed once, not twice
    assert Backend.objects.get().api_key == key
    assert stored(backend) != raw  # a fresh token (Fernet's random IV), the same key


def test_no_key_stays_empty():
    backend = hosted("")
    assert stored(backend) == ""
    assert Backend.objects.get().api_key == ""


def test_a_longest_key_fits_its_column():
    key = "k" * 500  # the most the admin takes
    backend = hosted(key)
    assert len(stored(backend)) <= Backend._meta.get_field("api_key").max_length
    assert Backend.objects.get().api_key == key


def test_a_changed_secret_key_reads_the_key_with_the_old_one_as_fallback(settings, caplog):
    key = "sk-" + secrets.token_urlsafe(32)
    backend = hosted(key)
    old = settings.SECRET_KEY

    settings.SECRET_KEY = secrets.token_urlsafe(50)
    settings.SECRET_KEY_FALLBACKS = [old]
    assert Backend.objects.get().api_key == key
    Backend.objects.get().save()  # sealed again, with the new key

    settings.SECRET_KEY_FALLBACKS = []
    assert Backend.objects.get().api_key == key

    settings.SECRET_KEY = old  # the new key lost: nothing opens the token
    with caplog.at_level(logging.ERROR, logger="proxy.sealed"):
        assert Backend.objects.get(pk=backend.pk).api_key == ""
    assert "Backend.api_key cannot be decrypted" in caplog.text
    assert key not in caplog.text


def test_the_migration_seals_keys_stored_before_it_and_unseals_them_back():
    keys = ["sk-" + secrets.token_urlsafe(32), "sk-" + secrets.token_urlsafe(32)]
    backends = [hosted(key, name=f"h{number}") for number, key in enumerate(keys)]
    hosted("", name="keyless")
    for backend, key in zip(backends, keys, strict=True):
        write_plain(backend, key)  # as a database before migration 0012 holds them

    class Editor:
        connection = connection

        @staticmethod
        def quote_name(name):
            return connection.ops.quote_name(name)

    migration.seal_stored_keys(apps, Editor)
    for backend, key in zip(backends, keys, strict=True):
        assert stored(backend).startswith(sealed.PREFIX)
        assert Backend.objects.get(pk=backend.pk).api_key == key

    migration.unseal_stored_keys(apps, Editor)
    assert [stored(backend) for backend in backends] == keys
    assert Backend.objects.get(name="keyless").api_key == ""
