"""lockgate.cli.fastjson, json.loads and json.dumps for the plugin's actions without the json
package: the same text and the same values as json's, its errors where json has them."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockgate.cli import fastjson

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(VALUES)
def test_dumps_writes_what_json_writes(value: Any) -> None:
    assert fastjson.dumps(value) == json.dumps(value)


@given(VALUES, st.sampled_from(["", " ", "\n", "\r\n\t "]), st.booleans())
def test_loads_reads_what_json_reads(value: Any, space: str, as_bytes: bool) -> None:
    text = space + json.dumps(value, ensure_ascii=False) + space
    data: str | bytes = text.encode() if as_bytes else text
    assert fastjson.loads(data) == json.loads(data)


@pytest.mark.parametrize("text", ["", "{", '{"a": 1} x', "[1,]", "nul", '{"a" 1}', "1 2"])
def test_malformed_documents_raise_jsons_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        fastjson.loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


def test_what_json_cannot_write_is_refused_alike() -> None:
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        fastjson.dumps({"a": {1}})
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference detected"):
        fastjson.dumps(loop)
    assert fastjson.dumps({"a": [1]}) == '{"a": [1]}'  # and the next call is unaffected


def test_it_does_its_work_without_the_json_package() -> None:
    code = (
        "import sys\n"
        "from lockgate.cli import fastjson\n"
        "value = fastjson.loads(fastjson.dumps({'a': [1, 2.5, None, True, 'é']}))\n"
        "print(value, 'json' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "{'a': [1, 2.5, None, True, 'é']} False\n"
