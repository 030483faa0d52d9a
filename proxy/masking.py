"""PII masking of recorded text, applied by the writer before storage.

The client's bytes are never touched: masking happens on the copy that becomes a Message. Each
masked span is replaced by a marker naming what was there (`[email]`, `[card]`, ...), so an
analyst knows something was removed and what kind of thing it was.

Matches that need more than a pattern are checked: card numbers by Luhn, IBANs by their mod-97
check digits, IP addresses by parsing, so ordinary numbers and words stay readable.

Masking runs in the recorder's writer thread, which shares the GIL with the proxy's event loop,
so each kind first asks whether the text holds what every match of it must (a digit, an `@`, a
key's prefix): most prose holds none, and a pass of Python's regex engine over text it cannot
match costs as much as one that finds something. bench/masking.py measures it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

KINDS = ("secret", "email", "card", "iban", "ip", "phone")


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match) -> bool:
    digits = re.sub(r"[ -]", "", match.group())
    return 13 <= len(digits) <= 19 and _luhn_valid(digits)


def _iban(match: re.Match) -> bool:
    compact = match.group().replace(" ", "").upper()
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _ip(match: re.Match) -> bool:
    try:
        ipaddress.ip_address(match.group())
    except ValueError:
        return False
    return True


def _phone(match: re.Match) -> bool:
    """A phone number: 8 to 15 digits, written the way phone numbers are (a country code, an
    area code in brackets, or at least two separators), and not a date."""
    text = match.group()
    digits = re.sub(r"\D", "", text)
    if not 8 <= len(digits) <= 15 or ISO_DATE.fullmatch(text):
        return False
    return text.startswith(("+", "(")) or len(re.findall(r"[ .-]", text)) >= 2


ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

# What a text must hold for a kind to match in it, looked for before the kind's own pattern.
# Digits and capitals are looked for in the text's shape (`_shape`), with `in` and patterns that
# start with a literal: both scan many times faster than a pattern that starts with a class or
# a lookbehind, as every kind's does.
_SHAPE_TABLE = bytes(
    ord("0") if byte >= 0x80 or chr(byte).isdigit() else ord("A") if chr(byte).isupper() else byte
    for byte in range(256)
)
IPV4_SHAPE = re.compile(rb"0\.0+\.0+\.0")
# A card that passes is 13 digits or more; a phone number 8 digits or more and a separator.
# Each match that is masked starts with a digit or runs from one to its last: the first digit is
# followed by at least 12 (8) of the match's characters.
CARD_SHAPE = re.compile(rb"0[0 -]{12}")
PHONE_SHAPE = re.compile(rb"0[0 .()+-]{8}")
IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
# The prefixes of the secrets' pattern, by a character each of them holds: `in` finds one
# character (memchr) an order of magnitude faster than a word.
SECRET_PREFIXES = (
    ("-", ("sk-", "glpat-", "xox")),  # the pattern's `xox[abposr]-`
    ("_", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    ("A", ("AKIA", "ASIA", "AIza")),
    ("J", ("eyJ",)),
    ("B", ("Bearer ",)),
)


def _shape(text: str) -> bytes:
    """The text's UTF-8 bytes with each ASCII digit as `0`, each ASCII capital as `A`, and each
    byte of a non-ASCII character as `0` (it may be a digit: `\\d` matches all of Unicode's),
    so that a run of n digits becomes a run of at least n zeros."""
    return text.encode("utf-8", "surrogatepass").translate(_SHAPE_TABLE)


def _may_hold_secret(text: str, shape: bytes) -> bool:
    return any(
        mark in text and any(map(text.__contains__, prefixes)) for mark, prefixes in SECRET_PREFIXES
    )


def _may_hold_email(text: str, shape: bytes) -> bool:
    return "@" in text


def _may_hold_card(text: str, shape: bytes) -> bool:
    return CARD_SHAPE.search(shape) is not None


def _may_hold_iban(text: str, shape: bytes) -> bool:
    return b"AA00" in shape


def _may_hold_ip(text: str, shape: bytes) -> bool:
    return IPV4_SHAPE.search(shape) is not None or IPV6_HINT.search(text) is not None


def _may_hold_phone(text: str, shape: bytes) -> bool:
    return PHONE_SHAPE.search(shape) is not None


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern
    accept: Callable[[re.Match], bool] | None = None
    # False for a text (and its `_shape`) that no match of the pattern can be in; None: always
    # run the pattern.
    may_match: Callable[[str, bytes], bool] | None = None

    def replace(self, match: re.Match) -> str:
        if self.accept is None or self.accept(match):
            return f"[{self.kind}]"
        return match.group()


# Order matters: secrets first (a JWT or key may contain digits that look like a phone number),
# then the structured numbers, phone numbers last.
DETECTORS = (
    Detector(
        "secret",
        re.compile(
            r"\b(?:"
            r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}"  # OpenAI, Anthropic
            r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"  # GitHub
            r"|(?:AKIA|ASIA)[0-9A-Z]{16}"  # AWS access key ids
            r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
            r"|AIza[0-9A-Za-z_-]{35}"  # Google API keys
            r"|glpat-[A-Za-z0-9_-]{20,}"  # GitLab
            r"|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWTs
            r")"
            r"|(?<=Bearer )[A-Za-z0-9._~+/=-]{16,}",
        ),
        may_match=_may_hold_secret,
    ),
    Detector(
        "email",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        may_match=_may_hold_email,
    ),
    Detector(
        "card",
        # As cards are written (13-19 digits, or groups of four, or Amex's 4-6-5), and not the
        # digits of an IBAN written in groups.
        re.compile(
            r"(?<![A-Z]{2}\d{2} )\b(?:\d{13,19}|\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?"
            r"|\d{4}[ -]\d{6}[ -]\d{5})\b"
        ),
        _card,
        _may_hold_card,
    ),
    Detector(
        "iban",
        re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
        _iban,
        _may_hold_iban,
    ),
    Detector(
        "ip",
        re.compile(
            r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}"
            r"|(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w:]|\.\d)"
        ),
        _ip,
        _may_hold_ip,
    ),
    Detector(
        "phone",
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?"
            r"\d{2,4}(?:[ .-]\d{2,4}){1,4}(?!\w)"
        ),
        _phone,
        _may_hold_phone,
    ),
)


class Masker:
    """Masks the chosen kinds of PII, plus extra (name, regex) rules an admin defined."""

    def __init__(self, kinds: Iterable[str] = KINDS, extra: Iterable[tuple[str, str]] = ()):
        kinds, extra = set(kinds), tuple(extra)
        unknown = kinds - set(KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds: {', '.join(sorted(unknown))}")
        self.kinds, self.extra = kinds, extra
        by_kinds = [detector for detector in DETECTORS if detector.kind in kinds]
        by_rules = [Detector(name, re.compile(pattern)) for name, pattern in extra]
        # Looked up once: `mask` runs for every string of every message.
        self.kind_steps = [(d.may_match, d.pattern.sub, d.replace) for d in by_kinds]
        self.rule_steps = [(d.pattern.sub, d.replace) for d in by_rules]

    def mask(self, text: str) -> str:
        """The text with each detected span replaced by `[kind]`."""
        if not text:
            return text
        if self.kind_steps:
            # A mask replaces a span by `[kind]`, whose brackets join nothing new: what the
            # shape lacks, the masked text lacks too.
            shape = _shape(text)
            if b"0" in shape or "@" in text or ":" in text or _may_hold_secret(text, shape):
                for may_match, substitute, replace in self.kind_steps:
                    if may_match(text, shape):
                        text = substitute(replace, text)
        for substitute, replace in self.rule_steps:
            text = substitute(replace, text)
        return text

    def mask_value(self, value):
        """Masks the strings inside a JSON-like value (chat messages, tool calls)."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, list):
            return [self.mask_value(item) for item in value]
        if isinstance(value, dict):
            return {key: self.mask_value(item) for key, item in value.items()}
        return value

    @cached_property
    def by_kinds(self) -> Masker:
        """The built-in kinds alone: no match of theirs holds a newline or a bracket, so text
        joined from pieces by those is masked as the pieces are (privacy.mask_row)."""
        return Masker(self.kinds) if self.extra else self

    @cached_property
    def by_rules(self) -> Masker | None:
        """The admin's rules alone (any regex: they may match across pieces); None if none."""
        return Masker((), self.extra) if self.extra else None
