"""What a round writes of a status: only the fields that change what the API stores."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lockgate.controller.deployments import changed, without_nulls

scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
trees = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)


@given(trees, trees)
def test_a_field_changes_exactly_when_what_the_api_stores_would(stored: Any, value: Any) -> None:
    # The API never stores a null a merge patch wrote (it deletes the field instead), but a
    # status written otherwise may hold one: both are compared as stored.
    expected = without_nulls(stored) != without_nulls(value)
    for as_stored in (stored, without_nulls(stored)):
        assert changed(as_stored, value) == expected
