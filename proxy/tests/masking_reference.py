"""The masking as it was before the trigger checks and the shared chat history (frozen copy).

`test_masking_equivalence` compares the masker of proxy.masking and proxy.privacy with this one
on a corpus of rows, and bench/masking.py times both. Do not change it: it is the reference.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxy.ollama import readable_turns

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


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
TEXT_FIELDS = ("prompt", "response", "thinking")
JSON_FIELDS = ("messages", "tool_calls")


def storable(value):
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value) if _UNSTORABLE.search(value) else value
    if isinstance(value, list):
        return [storable(item) for item in value]
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    return value


def mask_row(row: dict, masker: Masker | None) -> bool:
    if masker is None:
        return False
    changed = False
    for name in TEXT_FIELDS + JSON_FIELDS:
        value = row.get(name)
        if not value:
            continue
        masked = masker.mask(value) if isinstance(value, str) else masker.mask_value(value)
        if masked != value:
            row[name] = masked
            changed = True
    return changed


def prepare(row: dict, masker: Masker | None) -> None:
    """`privacy.prepare` at the full record level, with this masker."""
    for name, value in row.items():
        if isinstance(value, str | list | dict):
            row[name] = storable(value)
    mask_row(row, masker)


def digits(zero: int, text: str) -> str:
    """The text with its ASCII digits written in the script whose zero is `zero`."""
    return text.translate({ord("0") + value: zero + value for value in range(10)})


# A corpus of texts: prose, code, numbers that are and are not PII, edge characters.
TEXTS = [
    "",
    "hi",
    "Why is the sky blue? Answer in one sentence.",
    "The sky is blue because of Rayleigh scattering: shorter wavelengths scatter more.",
    "in 2024 we sold 1500 units, up 12% from 2023; see table 3.",
    "Release 1.2.3.4.5 fixed it, and 999.1.1.1 is no address; 10.0.0.1 is.",
    "mail ada@example.com or grace.hopper+navy@mail.example.org now",
    "card 4111 1111 1111 1111 ok, 4111-1111-1111-1111, 4111111111111111 and 4111 1111 1111 1112",
    "card 4111-1111-1111-1111",
    "card 4111111111111111",
    "amex 3782 822463 10005 and a number 1234 5678 9012 3456",
    "iban DE89 3704 0044 0532 0130 00 please, GB82WEST12345698765432, DE89 3704 0044 0532 0130 01",
    "iban GB82WEST12345698765432",
    "from 192.168.1.20 and 2001:db8::1. then ::1 and fe80::1%eth0, ::, a::b, 1:2:3",
    "call +44 20 7946 0958 today or (555) 123-4567 or 555.123.4567, not 2024-01-31",
    "call 555.123.4567",
    "call (555) 123-4567",
    "call (12)345-678",
    "call +1234 5678",
    "call 12 34 56 78",
    "13 digits: 4222222222222",
    "call 555-123-4567",
    "call +442079460958 or (020)79460958",
    "key sk-proj-abcdefghijklmnop1234 and sk-short and sk-ant-" + "x" * 40,
    # Each kind of key alone in its text, then all together.
    "token ghp_" + "a" * 36,
    "token github_pat_" + "B" * 40,
    "token glpat-" + "c" * 24,
    "aws AKIAIOSFODNN7EXAMPLE",
    "aws ASIA1234567890ABCDEF",
    "slack xoxb-1234567890-abc",
    "google AIza" + "d" * 35,
    "anthropic sk-ant-" + "e" * 30,
    "ghp_" + "a" * 36 + " github_pat_" + "B" * 40 + " AKIAIOSFODNN7EXAMPLE xoxp-1234567890-abc",
    "Authorization: Bearer abc.def-ghi_jkl123456 and Bearer short",
    "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
    ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "the year 1999-2000, version v2.10, port :8080, time 12:30:45, ratio 3:2",
    "```python\ndef f(x):\n    return x * 1024 + 0xFF  # 2^10\n```\nprint(f(3))",
    # Other scripts' digits: `\\d` matches them, and int() reads them (Luhn, the phone's count).
    f"digits {digits(0x660, '345')} and {digits(0xFF10, '4111')}; email ünï@exämple.de",
    "card in full-width digits " + digits(0xFF10, "4111111111111111"),
    "phone in Arabic-Indic digits " + digits(0x660, "020 7946 0958 and ip 192.168.1.20"),
    "iban with Devanagari digits DE" + digits(0x966, "89 3704 0044 0532 0130 00"),
    "nul \x00 and surrogate \ud800 inside",
    "EMP-123456 and EMP-12345",
    "a@b.c x@y.co mixed 4111111111111111@example.com",
    "[user]\nnested [image] markers [email] [card]",
    "MAC 00:1B:44:11:3A:B7 and dead:beef:cafe::1 and 12:34:56:78",
]


def rows():
    """Rows as `Exchange.to_fields` makes them: chats with history and tool calls, generate,
    /v1, empty and odd fields; every text of TEXTS appears in several places."""
    long = " ".join(TEXTS[2:5] * 20)
    texts = [*TEXTS, long, f"{long} {TEXTS[6]} {TEXTS[7]}"]
    for index, text in enumerate(texts):
        reply = texts[(index * 7 + 3) % len(texts)]
        history = [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": text},
            {"role": "assistant", "content": reply, "thinking": texts[(index + 5) % len(texts)]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"function": {"name": "lookup", "arguments": {"q": text, "n": index}}}
                ],
            },
            {"role": "tool", "content": reply, "tool_name": "lookup"},
            {"role": "user", "content": text + " again", "images": 2},
        ]
        yield {
            "endpoint": "/api/chat",
            "model": "llama3.2",
            "prompt": readable_turns(history),
            "messages": history,
            "response": reply,
            "thinking": text,
            "tool_calls": [{"function": {"name": "send", "arguments": {"to": text}}}],
            "error": text,
            "options": {"stop": [text]},
        }
        yield {
            "endpoint": "/api/generate",
            "model": "qwen3:8b",
            "prompt": f"[system]\n{reply}\n\n[user]\n{text}",
            "messages": None,
            "response": text,
            "thinking": "",
            "tool_calls": None,
        }
        # A prompt that is not the history's text (written by hand, or by an older version).
        yield {
            "endpoint": "/v1/chat/completions",
            "model": "gpt-oss:20b",
            "prompt": text,
            "messages": [{"role": "user", "content": reply}, {"role": text, "content": text}],
            "response": "",
            "thinking": None,
            "tool_calls": [],
        }
