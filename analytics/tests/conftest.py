"""Fixtures of the analytics API tests: the real application on loopback, analysts with and
without permissions, and messages written the way the recorder writes them."""

import importlib
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Permission
from django.core.cache import cache
from django.db import transaction

from analytics.models import ApiToken
from proxy import categories, costs, rollups
from proxy.models import CategoryRule, Message

T0 = datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)  # a Monday
_sequence = itertools.count()


@pytest.fixture(autouse=True)
def fresh_cache():
    """Aggregations are cached by their filters, prices and rules per process: each test
    starts with nothing cached (a flush between tests sends no signal)."""
    cache.clear()
    costs.forget()
    categories.forget()
    yield
    cache.clear()
    costs.forget()
    categories.forget()


@pytest.fixture
def default_rules(transactional_db):
    """The default category rules of migration 0004 (a flush between tests removes them)."""
    migration = importlib.import_module("proxy.migrations.0004_default_category_rules")
    CategoryRule.objects.all().delete()
    migration.create_rules(django_apps, None)


@pytest.fixture
def server(start_proxy):
    """The whole application (proxy, admin, analytics API) under uvicorn on a free port."""
    return start_proxy()


PASSWORD = "correct horse battery"


def make_user(django_user_model, name, *permissions, staff=False):
    """A user with these `proxy` permissions; only staff (who log into the admin) get a
    password, since hashing one takes a good part of a test's time."""
    user = django_user_model.objects.create_user(
        name, password=PASSWORD if staff else None, is_staff=staff
    )
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


def client_for(server, user) -> httpx.Client:
    """An API client with a fresh bearer token of `user`."""
    _, secret = ApiToken.issue(user, "tests")
    return httpx.Client(
        base_url=f"{server.url}/analytics",
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )


@pytest.fixture
def analyst(django_user_model):
    return make_user(django_user_model, "analyst", "view_message", "view_message_content")


@pytest.fixture
def api(server, analyst):
    """A client of an analyst who may read metadata and content."""
    with client_for(server, analyst) as client:
        yield client


def message_fields(**overrides) -> dict:
    """The fields of a plausible message, as the recorder's writer makes them."""
    number = next(_sequence)
    fields = {
        "request_id": uuid.uuid4(),
        "timestamp": T0 + timedelta(seconds=number),
        "endpoint": "/api/chat",
        "model": "llama3.2",
        "stream": True,
        "status": "success",
        "http_status": 200,
        "user": "alice",
        "client_ip": "127.0.0.1",
        "prompt": "Why is the sky blue?",
        "response": "Rayleigh scattering of sunlight.",
        "input_tokens": 20,
        "output_tokens": 40,
        "latency_seconds": 1.2,
        "ttft_seconds": 0.2,
        "tokens_per_second": 40.0,
        "cost_usd": 0.001,
        "category": "chat",
        "error": "",
    }
    fields.update(overrides)
    return fields


@pytest.fixture
def write():
    """Write messages as the recorder's writer does: rows and rollups in one transaction.
    Returns the messages, in the order given."""

    def write(*many: dict) -> list[Message]:
        rows = [message_fields(**overrides) for overrides in many]
        with transaction.atomic():
            Message.objects.bulk_create([Message(**row) for row in rows])
            rollups.add(rows)
        by_request = Message.objects.in_bulk(
            [row["request_id"] for row in rows], field_name="request_id"
        )
        return [by_request[row["request_id"]] for row in rows]

    return write
