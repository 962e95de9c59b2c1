"""The HTTP API and Kafka intake accept the same ids (issue 11, point 2): for any unicode string, an id
the intake validates is one the API serves, and the reverse."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from agents.core.events import Id
from agents.http import valid_id

ID = TypeAdapter(Id)


def intake_accepts(value: str) -> bool:
    try:
        ID.validate_python(value)
    except ValidationError:
        return False
    return True


@settings(max_examples=3_000, deadline=None)
@given(st.text(max_size=210) | st.text(alphabet=st.characters(max_codepoint=0xA0), max_size=8))
def test_intake_and_the_api_accept_the_same_ids(value: str) -> None:
    assert intake_accepts(value) == valid_id(value)


def test_the_edges() -> None:
    for value in ("a/b", "%2F", "😀" * 200, "ä|"[0], "x" * 200):
        assert intake_accepts(value) and valid_id(value), value
    for value in ("", "a|b", "a\x00", "a\x7f", "a\x85", "x" * 201):
        assert not intake_accepts(value) and not valid_id(value), value
