"""The live feed: new messages pushed to logged-in readers over a WebSocket (/ws/messages/).

The recorder's writer publishes each batch it has inserted to one channel-layer group; every
connected reader's consumer receives it and sends the messages on in the analytics API's JSON
shape (`Message.as_json`), their text masked for readers without the content permission. With
REDIS_URL the layer is Redis, so a message written by one worker reaches readers on every one.
"""

from __future__ import annotations

import asyncio
import logging
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.contrib.auth import get_user_model

from .models import Message

log = logging.getLogger(__name__)

GROUP = "live-messages"
# The analytics permissions (analytics.auth): proxy does not import analytics.
READ_PERMISSION = "proxy.view_message"
CONTENT_PERMISSION = "proxy.view_message_content"
# The feed shows excerpts and links to the message: text beyond this is cut, so one event
# stays small whatever was recorded (a prompt may be a megabyte).
FEED_TEXT_CHARS = 2000
# Messages per layer event; a writer batch can hold hundreds.
EVENT_MESSAGES = 50
# How long a publish may take before it is given up (a Redis that does not answer).
PUBLISH_TIMEOUT_SECONDS = 5.0
# An open socket outlives a logout, a deactivated account or a withdrawn permission: they are
# read again before a delivery when older than this.
RECHECK_SECONDS = 30.0
# Close code of a socket whose reader may no longer read (4000-4999 are the application's).
CLOSE_FORBIDDEN = 4403


class LiveFeedConsumer(AsyncJsonWebsocketConsumer):
    """Sends `{"type": "message", "message": {...}}` for each new message."""

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # before accept: the handshake is refused (HTTP 403)
            return
        readable, self.content = await database_sync_to_async(_permissions)(user)
        if not readable:
            await self.close()
            return
        self.checked = time.monotonic()
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def feed_messages(self, event):
        if time.monotonic() - self.checked > RECHECK_SECONDS:
            session = self.scope.get("session")
            session_key = session.session_key if session is not None else None
            readable, self.content = await database_sync_to_async(_still_permitted)(
                self.scope["user"].pk, session, session_key
            )
            self.checked = time.monotonic()
            if not readable:
                await self.channel_layer.group_discard(GROUP, self.channel_name)
                await self.close(code=CLOSE_FORBIDDEN)
                return
        for message in event["messages"]:
            if not self.content:
                message = {**message, **dict.fromkeys(Message.CONTENT_FIELDS)}
            await self.send_json({"type": "message", "message": message})


def _permissions(user) -> tuple[bool, bool]:
    return user.has_perm(READ_PERMISSION), user.has_perm(CONTENT_PERMISSION)


def _still_permitted(user_id, session, session_key) -> tuple[bool, bool]:
    """The permissions of the socket's user as they are now: none once the session has ended
    (logout, expiry) or the account is gone or inactive."""
    if session is not None and (session_key is None or not session.exists(session_key)):
        return False, False
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    return _permissions(user) if user is not None else (False, False)


def feed_json(row: dict) -> dict:
    """A row as the writer inserted it, in the API's JSON shape with its text cut short."""
    message = Message(**row).as_json(content=True)
    for name in Message.CONTENT_FIELDS:
        text = message[name]
        if text and len(text) > FEED_TEXT_CHARS:
            message[name] = text[:FEED_TEXT_CHARS] + "…"
    return message


def publish(rows: list[dict], loop: asyncio.AbstractEventLoop | None) -> None:
    """From the writer thread, after an insert: hand the new messages to the feed's group on
    the event loop. Returns at once and never raises: a layer that is down costs the feed,
    never a record."""
    if loop is None or loop.is_closed():
        return
    try:
        layer = get_channel_layer()
        if layer is None or not _may_have_listeners(layer):
            return
        messages = [feed_json(row) for row in rows]
        for start in range(0, len(messages), EVENT_MESSAGES):
            event = {"type": "feed.messages", "messages": messages[start : start + EVENT_MESSAGES]}
            asyncio.run_coroutine_threadsafe(_send(layer, event), loop)
    except Exception:
        log.exception("live feed: could not publish %d messages", len(rows))


def _may_have_listeners(layer) -> bool:
    """False when no dashboard watches the feed: the in-memory layer (one worker) knows its
    group, so the writer skips building events nobody reads (~20 us a message). A shared
    layer (Redis) may have listeners on other workers: always published to."""
    if isinstance(layer, InMemoryChannelLayer):
        return bool(layer.groups.get(GROUP))
    return True


_failing = False


async def _send(layer, event: dict) -> None:
    global _failing
    try:
        await asyncio.wait_for(layer.group_send(GROUP, event), PUBLISH_TIMEOUT_SECONDS)
    except Exception as error:
        if not _failing:  # once per outage, not once per batch
            log.warning("live feed: the channel layer is unavailable (%r)", error)
        _failing = True
    else:
        if _failing:
            log.info("live feed: the channel layer is back")
        _failing = False
