"""PII masking of recorded text, applied by the writer before storage.

The client's bytes are never touched: masking happens on the copy that becomes a Message. Each
masked span is replaced by a marker naming what was there (`[email]`, `[card]`, ...), so an
analyst knows something was removed and what kind of thing it was.

Matches that need more than a pattern are checked: card numbers by Luhn, IBANs by their mod-97
check digits, IP addresses by parsing, so ordinary numbers and words stay readable.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern
    accept: Callable[[re.Match], bool] | None = None


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
    ),
    Detector(
        "email",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
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
    ),
    Detector(
        "iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), _iban
    ),
    Detector(
        "ip",
        re.compile(
            r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}"
            r"|(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w:]|\.\d)"
        ),
        _ip,
    ),
    Detector(
        "phone",
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?"
            r"\d{2,4}(?:[ .-]\d{2,4}){1,4}(?!\w)"
        ),
        _phone,
    ),
)


class Masker:
    """Masks the chosen kinds of PII, plus extra (name, regex) rules an admin defined."""

    def __init__(self, kinds: Iterable[str] = KINDS, extra: Iterable[tuple[str, str]] = ()):
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown PII kinds: {', '.join(sorted(unknown))}")
        self.detectors = [detector for detector in DETECTORS if detector.kind in set(kinds)]
        self.detectors += [Detector(name, re.compile(pattern)) for name, pattern in extra]

    def mask(self, text: str) -> str:
        """The text with each detected span replaced by `[kind]`."""
        if not text:
            return text
        for detector in self.detectors:
            text = detector.pattern.sub(_replacer(detector), text)
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


def _replacer(detector: Detector):
    marker = f"[{detector.kind}]"

    def replace(match: re.Match) -> str:
        if detector.accept is None or detector.accept(match):
            return marker
        return match.group()

    return replace
