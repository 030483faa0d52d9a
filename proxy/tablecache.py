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


class TableCache(Generic[T]):
    def __init__(self, model, build: Callable[[], T], every: float = 30.0):
        self.build = build
        self.every = every
        self._lock = threading.Lock()
        self._value: T | None = None
        self._loaded_at = 0.0
        for signal in (post_save, post_delete):
            signal.connect(self._changed, sender=model, weak=False)

    def current(self) -> T:
        """The value, rebuilt when stale. Raises the database's error only when the table
        cannot be read and no earlier copy exists."""
        with self._lock:
            if self._value is None or time.monotonic() - self._loaded_at > self.every:
                try:
                    self._value = self.build()
                except Exception:
                    if self._value is None:
                        raise
                self._loaded_at = time.monotonic()
            return self._value

    def forget(self) -> None:
        """Read the table again on next use."""
        with self._lock:
            self._value = None

    def _changed(self, **kwargs) -> None:
        self.forget()
