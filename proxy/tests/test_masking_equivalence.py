"""The faster masking masks exactly what the one before it did (masking_reference.py): the same
rows come out, with the built-in kinds alone, with admin rules, and with some kinds only."""

import copy
import random

import pytest

from proxy import privacy
from proxy.masking import KINDS, Masker

from . import masking_reference as reference

RULES = [("employee-id", r"\bEMP-\d{6}\b"), ("across", r"\]\n\w+"), ("gap", r"\n\n\[")]
CONFIGURATIONS = [
    (KINDS, []),
    (KINDS, RULES),
    (["email", "secret"], []),
    (["card", "iban", "ip", "phone"], RULES[:1]),
    ([], RULES),
]


def masked_rows(prepare):
    rows = [copy.deepcopy(row) for row in reference.rows()]
    for row in rows:
        prepare(row)
    return rows


@pytest.mark.parametrize(("kinds", "rules"), CONFIGURATIONS)
def test_rows_are_masked_as_before(kinds, rules, settings, monkeypatch):
    settings.RECORD_LEVELS = []
    new, old = Masker(kinds, rules), reference.Masker(kinds, rules)
    monkeypatch.setattr(privacy, "in_memory", lambda: new)

    masked_now = masked_rows(lambda row: privacy.prepare(row, read_rules=False))

    assert masked_now == masked_rows(lambda row: reference.prepare(row, old))


@pytest.mark.parametrize(
    "value",
    [
        {"k\x00": ["\ud800", 1, ("a\x00",)], "ok": {"\udfff": None}},
        {3: "x\x00", "y": [1.5, True]},
        ["a\\u0000", "fine"],
        [{"role": "user", "content": "clean"}],
        "nul \x00 and \ud83d alone",
    ],
)
def test_what_no_database_stores_is_replaced_as_before(value):
    assert privacy.storable(value) == reference.storable(value)


def test_the_chat_history_is_masked_once_and_the_prompt_joined_from_it():
    row = next(reference.rows())
    row["prompt"] = "[user]\nada@example.com"
    row["messages"] = [{"role": "user", "content": "ada@example.com"}]

    assert privacy.mask_row(row, Masker()) is True
    assert row["prompt"] == "[user]\n[email]"
    assert row["messages"] == [{"role": "user", "content": "[email]"}]


def test_mask_row_says_whether_anything_changed_as_before():
    new, old = Masker(), reference.Masker()
    for row in reference.rows():
        assert privacy.mask_row(copy.deepcopy(row), new) == reference.mask_row(row, old)


# Characters every kind's pattern and its context look at, to make texts of at random.
ALPHABET = "0123456789 -.:+()@_/=~%[]\nABDEFGKSXYZabcdefkspxyz" + "٣Ü\t"
PIECES = [text for text in reference.TEXTS if text] + ["sk-", "eyJ", "Bearer ", "AKIA", "::"]


@pytest.mark.parametrize("seed", range(4))
def test_random_texts_are_masked_as_before(seed):
    pick = random.Random(seed)
    new, old = Masker(extra=RULES), reference.Masker(extra=RULES)
    for _ in range(1500):
        parts = [
            pick.choice(PIECES)
            if pick.random() < 0.3
            else "".join(pick.choices(ALPHABET, k=pick.randint(1, 30)))
            for _ in range(pick.randint(1, 6))
        ]
        text = "".join(parts)
        turns = [{"role": pick.choice(["user", "x 12", ""]), "content": part} for part in parts]
        row = {"prompt": reference.readable_turns(turns), "messages": turns}
        expected = copy.deepcopy(row)

        assert new.mask(text) == old.mask(text)
        privacy.mask_row(row, new)
        reference.mask_row(expected, old)
        assert row == expected
