"""Id parsing follows Python's uuid.UUID, as TopChef's routing does."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from topchef_worker._ids import id_from_url, parse_id


@given(st.uuids())
def test_every_spelling_uuid_accepts_is_the_same_id(value: uuid.UUID) -> None:
    """Upper case, no dashes, braces and urn:uuid: all parse to the canonical form."""
    canonical = str(value)
    spellings = [
        canonical,
        canonical.upper(),
        value.hex,
        value.hex.upper(),
        "{" + canonical + "}",
        value.urn,
    ]
    assert [canonical] * len(spellings) == [parse_id(s) for s in spellings]


@given(st.text())
def test_parse_id_agrees_with_uuid(text: str) -> None:
    """parse_id accepts exactly what uuid.UUID accepts, and never raises."""
    try:
        expected = str(uuid.UUID(text))
    except ValueError:
        expected = None
    assert expected == parse_id(text)


@pytest.mark.parametrize("value", [None, 5, b"abc", uuid.uuid4(), ["x"]])
def test_non_strings_are_not_ids(value: object) -> None:
    """Only text can be a path id."""
    assert parse_id(value) is None


@given(st.uuids(), st.sampled_from(["services", "jobs"]), st.booleans())
def test_id_from_location(value: uuid.UUID, kind: str, slash: bool) -> None:
    """The id is the last path segment of a Location URL."""
    url = f"http://127.0.0.1:5077/{kind}/{str(value).upper()}" + ("/" if slash else "")
    assert str(value) == id_from_url(url)


@pytest.mark.parametrize(
    "url", ["", "http://h/services", "http://h/services/not-a-uuid", "http://h/"]
)
def test_location_without_an_id(url: str) -> None:
    """A Location that does not end in an id yields None."""
    assert id_from_url(url) is None
