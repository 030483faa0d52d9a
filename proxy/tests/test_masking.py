"""PII masking of recorded text: what is found, what is left alone, how it is marked."""

import pytest

from proxy.masking import Masker

masker = Masker()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail ada@example.com now", "mail [email] now"),
        ("card 4111 1111 1111 1111 ok", "card [card] ok"),
        ("card 4111-1111-1111-1111", "card [card]"),
        ("iban DE89 3704 0044 0532 0130 00 please", "iban [iban] please"),
        ("iban GB82WEST12345698765432", "iban [iban]"),
        ("from 192.168.1.20 and 2001:db8::1.", "from [ip] and [ip]."),
        ("call +44 20 7946 0958 today", "call [phone] today"),
        ("call (555) 123-4567", "call [phone]"),
        ("key sk-proj-abcdefghijklmnop1234", "key [secret]"),
        ("token ghp_" + "a" * 36, "token [secret]"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [secret]"),
        ("Authorization: Bearer abc.def-ghi_jkl123456", "Authorization: Bearer [secret]"),
        (
            "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0"
            ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "jwt [secret]",
        ),
    ],
)
def test_it_masks_each_kind_of_pii_with_a_marker_naming_it(text, expected):
    assert masker.mask(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "order 4111 1111 1111 1112 failed",  # fails the Luhn check
        "version 1.2.3.4.5 and 999.1.1.1",  # not IP addresses
        "DE89 3704 0044 0532 0130 01",  # wrong IBAN check digits
        "in 2024 we sold 1500 units",
        "sk-short",
        "the year 1999-2000",
    ],
)
def test_it_leaves_things_that_only_look_like_pii_alone(text):
    assert masker.mask(text) == text


def test_it_masks_only_the_kinds_asked_for_plus_admin_rules():
    only_email = Masker(kinds=["email"], extra=[("employee-id", r"\bEMP-\d{6}\b")])

    masked = only_email.mask("ada@example.com, 192.168.1.1, EMP-123456")

    assert masked == "[email], 192.168.1.1, [employee-id]"


def test_it_masks_strings_inside_chat_messages_and_tool_calls():
    value = [{"role": "user", "content": "I am ada@example.com", "images": 1}]

    assert masker.mask_value(value) == [{"role": "user", "content": "I am [email]", "images": 1}]


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown PII kinds: ssn"):
        Masker(kinds=["ssn"])
