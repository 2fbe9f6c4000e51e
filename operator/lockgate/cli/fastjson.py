"""json.loads and json.dumps for the plugin's action path, without importing the json package.

`import json` compiles json.decoder's regular expressions and imports `re` (with its
compiler), about a tenth of what `kubectl lockgate abort` costs before it reaches the API
server, for the four calls an action makes. The work itself is done by the same C
accelerator the json package uses (`_json`: its scanner and encoder, with the settings
json.loads and json.dumps use); anything the accelerator does not settle — a malformed
document, an interpreter without it — goes to the json package, so errors are json's own
(json.JSONDecodeError, a ValueError). tests/unit/test_fastjson.py compares both on generated
documents.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WHITESPACE = " \t\n\r"


class _Decoding:
    """The settings json.loads gives its scanner (json.decoder.JSONDecoder's defaults)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {
        "-Infinity": float("-inf"),
        "Infinity": float("inf"),
        "NaN": float("nan"),
    }.__getitem__
    memo: dict[str, Any] = {}  # (read by the scanner)


def _not_serializable(value: Any) -> Any:
    raise TypeError(f"Object of type {value.__class__.__name__} is not JSON serializable")


_scan: Callable[[str, int], tuple[Any, int]] | None
_encoder: Callable[[], Callable[[Any, int], Any]] | None
try:
    from _json import encode_basestring_ascii, make_encoder, make_scanner

    # (the stub asks for a scanner; the accelerator reads these fields of any object)
    _scan = make_scanner(_Decoding)  # type: ignore[arg-type]

    def _encoder() -> Callable[[Any, int], Any]:
        # json.dumps's settings: circular references checked (a new set of markers each
        # time, as json's), no indent, ": " and ", ", keys unsorted, none skipped, NaN
        # allowed, ASCII output.
        return make_encoder(
            {}, _not_serializable, encode_basestring_ascii, None, ": ", ", ", False, False, True
        )

    _encoder()  # (the accelerator takes these arguments)
except (ImportError, TypeError):  # another interpreter, another accelerator: the package
    _scan = _encoder = None


def loads(data: str | bytes) -> Any:
    """json.loads(data), for UTF-8 bytes or str."""
    text = data.decode() if isinstance(data, bytes | bytearray) else data
    if _scan is not None:
        start = 0
        while start < len(text) and text[start] in _WHITESPACE:
            start += 1
        try:
            value, end = _scan(text, start)
        except StopIteration:
            pass  # not a value there: json says why
        except ValueError:
            pass
        else:
            while end < len(text) and text[end] in _WHITESPACE:
                end += 1
            if end == len(text):
                return value
    import json

    return json.loads(text)


def dumps(value: Any) -> str:
    """json.dumps(value)."""
    if _encoder is not None and isinstance(value, dict | list):
        return "".join(_encoder()(value, 0))
    import json

    return json.dumps(value)
