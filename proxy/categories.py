"""Which category a message is in, from the admin-editable rules (`CategoryRule`).

Applied by the recorder's writer thread, never on a stream, and again over history by
`manage.py recategorize`. Rules are read at most every `RELOAD_SECONDS` per process (a change
in this process applies at once). Request headers are not stored, so header rules apply only
when a message is first written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .models import CategoryRule
from .tablecache import TableCache

RELOAD_SECONDS = 30.0
# What no rule matches.
FALLBACK = "other"
# Rules read the head and the tail of a long prompt (a chat's newest turn is at its end).
PROMPT_HEAD_CHARS = 10_000
PROMPT_TAIL_CHARS = 10_000
_CATEGORY_NAME = re.compile(r"[^a-z0-9_-]+")


@dataclass(frozen=True)
class Rule:
    category: str
    field: str
    header: str
    pattern: re.Pattern

    def category_of(self, fields: dict, headers: dict[str, str] | None) -> str | None:
        if self.field == CategoryRule.Field.HEADER:
            if headers is None:
                return None
            text = headers.get(self.header, "")
        elif self.field == CategoryRule.Field.PROMPT:
            text = fields.get("prompt") or ""
            if len(text) > PROMPT_HEAD_CHARS + PROMPT_TAIL_CHARS:
                text = f"{text[:PROMPT_HEAD_CHARS]}\n{text[-PROMPT_TAIL_CHARS:]}"
        else:
            text = fields.get(self.field) or ""
        found = self.pattern.search(text)
        if found is None:
            return None
        if self.category:
            return self.category
        named = _CATEGORY_NAME.sub("-", (found.group("category") or "").strip().lower())
        return named[:64] or None


class Rulebook:
    def __init__(self, rules: list[CategoryRule]):
        self.rules = []
        for rule in rules:
            if not rule.enabled:
                continue
            try:
                pattern = rule.compiled()
            except re.error:
                continue  # the admin validates patterns; a bad one from elsewhere is skipped
            if pattern is None or (not rule.category and "category" not in pattern.groupindex):
                continue
            self.rules.append(Rule(rule.category, rule.field, rule.header.strip().lower(), pattern))
        # Categories that rules can give from stored fields alone (not from a header).
        self.derivable = {FALLBACK, ""} | {
            rule.category
            for rule in self.rules
            if rule.field != CategoryRule.Field.HEADER and rule.category
        }

    def categorise(self, fields: dict, headers: dict[str, str] | None = None) -> str:
        """The category of a message's fields; `headers` (lowercased names) when known."""
        for rule in self.rules:
            category = rule.category_of(fields, headers)
            if category:
                return category
        return FALLBACK


RULES = TableCache(
    CategoryRule,
    lambda: Rulebook(list(CategoryRule.objects.order_by("priority", "id"))),
    RELOAD_SECONDS,
)
current = RULES.current
forget = RULES.forget
