"""Composing one story from the CIT answer fields and mapping spans back to the fields."""

from __future__ import annotations

import pytest

from nlp import compose_story


def test_fields_are_joined_in_order_skipping_blank_ones() -> None:
    story = compose_story(
        {
            "incident": "The flight was cancelled.",
            "circumstances": None,
            "behaviour": "   ",
            "outcome": "We got a refund.",
        }
    )
    assert story.text == "The flight was cancelled.\n\nWe got a refund."
    assert story.fields == ("incident", "outcome")


def test_locate_maps_spans_to_field_offsets() -> None:
    fields = {"incident": "  The flight was cancelled.\n", "outcome": "We got a refund."}
    story = compose_story(fields)
    start = story.text.index("cancelled")
    field, s, e = story.locate(start, start + len("cancelled"))
    assert field == "incident"
    assert fields[field][s:e] == "cancelled"
    start = story.text.index("refund")
    field, s, e = story.locate(start, start + len("refund"))
    assert (field, fields[field][s:e]) == ("outcome", "refund")


def test_every_character_of_every_field_maps_back() -> None:
    fields = {"a": "one two", "b": "", "c": " three\tfour ", "d": "five"}
    story = compose_story(fields)
    for index, char in enumerate(story.text):
        if char == "\n":
            continue
        field, s, e = story.locate(index, index + 1)
        assert fields[field][s:e] == char


@pytest.mark.parametrize("span", [(0, 0), (-1, 2), (0, 999), (20, 5)])
def test_locate_rejects_bad_spans(span: tuple[int, int]) -> None:
    story = compose_story({"a": "one two", "b": "three"})
    with pytest.raises(ValueError):
        story.locate(*span)


def test_locate_rejects_spans_in_separators() -> None:
    story = compose_story({"a": "one two", "b": "three"})
    with pytest.raises(ValueError):
        story.locate(7, 8)  # the blank line between the answers
    with pytest.raises(ValueError):
        story.locate(7, 9)


def test_locate_clips_spans_across_fields_to_the_first_field() -> None:
    fields = {"a": " one two", "b": "three four"}
    story = compose_story(fields)
    assert story.text == "one two\n\nthree four"
    assert story.locate(4, 14) == ("a", 5, 8)  # "two\n\nthree" -> "two"
    assert story.locate(7, 14) == ("b", 0, 5)  # "\n\nthree" -> "three"


def test_empty_story() -> None:
    story = compose_story({"a": None, "b": ""})
    assert story.text == ""
    assert story.segments == ()
