"""A value built from an admin-edited table, kept per process for the recorder's writer.

Read again when older than `every` seconds (other processes' edits) and at once after a save or
delete in this process, so a batch costs no extra query.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from django.db.models.signals import post_delete, post_save

T = TypeVar("T")
_UNSET = object()  # a built value may be None ("nothing to do"), which is still a value


class TableCache(Generic[T]):
    def __init__(self, model, build: Callable[[], T], every: float = 30.0):
        self.build = build
        self.every = every
        self._lock = threading.Lock()
        self._value = _UNSET
        self._loaded_at = 0.0
        for signal in (post_save, post_delete):
            signal.connect(self._changed, sender=model, weak=False)

    def current(self) -> T:
        """The value, rebuilt when stale. Raises the database's error only when the table
        cannot be read and no earlier copy exists."""
        with self._lock:
            if self._value is _UNSET or time.monotonic() - self._loaded_at > self.every:
                try:
                    self._value = self.build()
                except Exception:
                    if self._value is _UNSET:
                        raise
                self._loaded_at = time.monotonic()
            return self._value

    def last(self, default: T) -> T:
        """The value as last built, without reading the table (for callers on the event loop)."""
        with self._lock:
            return default if self._value is _UNSET else self._value

    def forget(self) -> None:
        """Read the table again on next use; the last value stays for `last()` meanwhile."""
        with self._lock:
            self._loaded_at = float("-inf")

    def _changed(self, **kwargs) -> None:
        self.forget()
