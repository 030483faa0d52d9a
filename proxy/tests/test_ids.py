"""Request ids: RFC 9562 version 7 UUIDs, unique, ordered by the millisecond they were made,
with that millisecond in their first 48 bits."""

import time
import uuid

from proxy import ids
from proxy.exchange import Exchange
from proxy.models import Message


def test_an_id_is_a_version_7_uuid_carrying_its_millisecond():
    before = time.time_ns() // 1_000_000
    made = ids.uuid7()
    after = time.time_ns() // 1_000_000

    assert isinstance(made, uuid.UUID)
    assert (made.version, made.variant) == (7, uuid.RFC_4122)
    assert before <= made.int >> 80 <= after
    assert uuid.UUID(str(made)) == made


def test_ids_are_unique_and_later_milliseconds_sort_later():
    many = [ids.uuid7() for _ in range(100_000)]
    assert len(set(many)) == len(many)

    first = ids.uuid7()
    time.sleep(0.002)
    second = ids.uuid7()
    assert first < second
    assert str(first) < str(second)  # as text too, as the API and exports show them


def test_requests_and_messages_get_them():
    assert Exchange("POST", "/api/chat", "127.0.0.1", {}).request_id.version == 7
    assert Message._meta.get_field("request_id").default().version == 7
