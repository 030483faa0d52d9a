"""Secrets kept encrypted in the database: a hosted API's key on a Backend.

A database dump, a backup or a read-only replica holds the key only as a Fernet token
(AES-128-CBC with an HMAC-SHA256, `cryptography`), under a key derived from SECRET_KEY with
HKDF; the proxy reads it back in plain text when it loads its backends. A stored value is
`fernet:<token>`; a value without the prefix (written before this field existed) is read as it
is and sealed when it is next saved, and migration 0012 seals those already stored.

Changing SECRET_KEY: list the previous one in SECRET_KEY_FALLBACKS and the keys stay readable
(each is sealed again with the new key when saved). A key that no configured secret opens reads
as empty, with one error in the log naming the backend's column, so the proxy keeps running and
the admin asks for the key again; it never raises from a query.
"""

from __future__ import annotations

import base64
import logging
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import models

log = logging.getLogger(__name__)

PREFIX = "fernet:"
_INFO = b"ollama-monitor sealed field v1"


def _fernet_key(secret: str) -> bytes:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        secret.encode()
    )
    return base64.urlsafe_b64encode(derived)


@lru_cache(maxsize=4)
def _fernet(secret: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_fernet_key(key)) for key in (secret, *fallbacks)])


def _current() -> MultiFernet:
    return _fernet(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


def seal(text: str) -> str:
    """`fernet:<token>` for a text; empty stays empty, a sealed value stays as it is."""
    if not text or text.startswith(PREFIX):
        return text
    return PREFIX + _current().encrypt(text.encode()).decode()


def unseal(stored: str, *, where: str = "a sealed value") -> str:
    """The text of a stored value; empty (and one error logged) when no secret opens it."""
    if not stored or not stored.startswith(PREFIX):
        return stored or ""
    try:
        return _current().decrypt(stored[len(PREFIX) :].encode()).decode()
    except (InvalidToken, ValueError):
        log.error(
            "%s cannot be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS (was SECRET_KEY "
            "changed?); it reads as empty until it is entered again",
            where,
        )
        return ""


class SealedCharField(models.CharField):
    """A CharField stored encrypted (`seal`) and read in plain text (`unseal`).

    Its column holds the token, longer than the text: `max_length` is the column's; limit the
    text in the form. It cannot be searched, ordered or filtered by its text.
    """

    def from_db_value(self, value, expression, connection):
        if value is None:
            return value
        return unseal(value, where=f"{self.model.__name__}.{self.name}")

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return value if value is None else seal(value)
