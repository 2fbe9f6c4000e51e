"""The YAML of kubeconfig files, read without PyYAML (whose import is a third of what a
`kubectl lockgate abort` costs before it reaches the API server).

It reads the subset kubeconfig writers produce (kubectl, client-go, cloud CLIs through
PyYAML or Go's yaml, hack/cluster): block mappings and sequences (with the compact
`- key: value` form), plain and quoted scalars on one line, one-line flow collections
(`{cluster: c, user: u}`, `{}`, `[]`), comments, a leading `---`. Scalars resolve as PyYAML's
SafeLoader resolves them. Anything else — anchors, aliases, tags, block scalars (`|`, `>`),
scalars continued on a next line, multi-line flow, tabs, scalars PyYAML might read as a
float, a timestamp or a non-decimal int, anything malformed — raises Unsupported, and the
caller reads the file with PyYAML: the answer is PyYAML's answer or no answer (a property
test compares the two on generated documents, tests/unit/test_kubeyaml.py).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# PyYAML's implicit resolvers (yaml/resolver.py), for the words they resolve; every other
# plain scalar starting with one of "-+.0123456789<=" (int, float, timestamp, merge,
# value) is left to PyYAML.
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"})
_FALSE = frozenset({"no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"})
_NUMERIC_START = frozenset("-+.0123456789<=")
# What a plain scalar may not start with (YAML's indicators; quotes and flow are parsed).
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_FLOW_STOPS = frozenset(",[]{}")
_ESCAPES = {
    "0": "\0",
    "a": "\a",
    "b": "\b",
    "t": "\t",
    "n": "\n",
    "v": "\v",
    "f": "\f",
    "r": "\r",
    "e": "\x1b",
    " ": " ",
    '"': '"',
    "/": "/",
    "\\": "\\",
    "N": "\x85",
    "_": "\xa0",
    "L": "\u2028",
    "P": "\u2029",
}
_HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}


class Unsupported(ValueError):
    """The text leaves the subset read here (which is not to say it is invalid YAML)."""


def load(text: str) -> Any:
    """The document in `text`, as yaml.safe_load returns it; Unsupported otherwise."""
    # (Python's printable characters are a subset of YAML's; a lone \r, \x85, \u2028 and
    # \u2029 break lines in YAML and are not printable here.)
    if "\t" in text or not text.replace("\r\n", "\n").replace("\n", "").isprintable():
        raise Unsupported("tabs, control or non-printable characters")
    lines: list[tuple[int, str]] = []
    started = False
    for raw in text.split("\n"):
        line = raw[:-1] if raw.endswith("\r") else raw
        stripped = line.strip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        marker = line[:3] in ("---", "...") and line[3:4] in ("", " ")
        if marker or line.startswith("%"):
            if line.rstrip(" ") == "---" and not started and not lines:
                started = True  # the document's start
                continue
            raise Unsupported("a directive, several documents or content after ---")
        indent = len(line) - len(line.lstrip(" "))
        lines.append((indent, stripped))
    if not lines:
        return None
    parser = _Block(lines)
    value, end = parser.node(0, lines[0][0])
    if end != len(lines):
        raise Unsupported(f"line {end}: indentation outside the subset")
    return value


class _Block:
    def __init__(self, lines: list[tuple[int, str]]) -> None:
        self.lines = lines

    def node(self, i: int, indent: int) -> tuple[Any, int]:
        text = self.lines[i][1]
        if _is_item(text):
            return self.sequence(i, indent)
        return self.mapping(i, indent)

    def mapping(self, i: int, indent: int) -> tuple[dict[str, Any], int]:
        result: dict[str, Any] = {}
        lines = self.lines
        while i < len(lines) and lines[i][0] == indent:
            text = lines[i][1]
            if _is_item(text):
                raise Unsupported(f"line {i}: a sequence item among mapping keys")
            key, rest = _key(text)
            i += 1
            if rest:
                result[key] = _inline(rest)
                if i < len(lines) and lines[i][0] > indent:
                    raise Unsupported(f"line {i}: a value continued on the next line")
            elif i < len(lines) and lines[i][0] > indent:
                result[key], i = self.node(i, lines[i][0])
            elif i < len(lines) and lines[i][0] == indent and _is_item(lines[i][1]):
                result[key], i = self.sequence(i, indent)
            else:
                result[key] = None
        if i < len(lines) and lines[i][0] > indent:
            raise Unsupported(f"line {i}: indentation outside the subset")
        return result, i

    def sequence(self, i: int, indent: int) -> tuple[list[Any], int]:
        result: list[Any] = []
        lines = self.lines
        while i < len(lines) and lines[i][0] == indent and _is_item(lines[i][1]):
            text = lines[i][1]
            content = text[1:].lstrip(" ")
            column = indent + len(text) - len(content)
            if not content:
                i += 1
                if i < len(lines) and lines[i][0] > indent:
                    value, i = self.node(i, lines[i][0])
                    result.append(value)
                else:
                    result.append(None)
                continue
            if _is_item(content):
                raise Unsupported(f"line {i}: a nested compact sequence")
            if _has_key(content):
                # `- key: value`: a mapping whose keys are at the column of `key`
                lines[i] = (column, content)
                value, i = self.mapping(i, column)
                result.append(value)
                continue
            result.append(_inline(content))
            i += 1
            if i < len(lines) and lines[i][0] > indent:
                raise Unsupported(f"line {i}: an item continued on the next line")
        return result, i


def _is_item(text: str) -> bool:
    return text == "-" or text.startswith("- ")


def _has_key(text: str) -> bool:
    if text[0] in "\"'":
        try:
            _, end = _quoted(text, 0)
        except Unsupported:
            return False
        return text[end:].lstrip(" ").startswith(":")
    if text[0] in "[{":
        return False
    return ": " in text.split(" #", 1)[0] or text.split(" #", 1)[0].rstrip(" ").endswith(":")


def _key(text: str) -> tuple[str, str]:
    """(key, the rest of the line after `key:`), for a line of a block mapping."""
    if text[0] in "\"'":
        key, end = _quoted(text, 0)
        after = text[end:].lstrip(" ")
        if not after.startswith(":") or (len(after) > 1 and after[1] != " "):
            raise Unsupported("a quoted key without ': '")
        return key, _uncommented(after[1:].strip(" "))
    if text[0] in _INDICATORS:
        raise Unsupported(f"a key starting with {text[0]!r}")
    index = text.find(": ")
    if index < 0:
        if not text.endswith(":"):
            raise Unsupported("a line that is neither key nor item")
        index = len(text) - 1
    raw_key = text[:index].rstrip(" ")
    if " #" in raw_key:
        raise Unsupported("a comment inside a key")
    key = _plain(raw_key)
    if not isinstance(key, str):
        raise Unsupported(f"a key PyYAML reads as {type(key).__name__}")
    return key, _uncommented(text[index + 1 :].strip(" "))


def _uncommented(rest: str) -> str:
    """The value's text after `key:`, empty when it is only a comment (`key:  # why`, its
    value on the next lines)."""
    return "" if rest.startswith("#") else rest


def _inline(text: str) -> Any:
    """A value written on the key's (or item's) line."""
    if text.startswith("#"):
        return None
    first = text[0]
    if first in "\"'":
        value, end = _quoted(text, 0)
        _only_comment(text[end:])
        return value
    if first in "[{":
        value, end = _Flow(text).node(0)
        _only_comment(text[end:])
        return value
    plain = text.split(" #", 1)[0].rstrip(" ")
    if ": " in plain or plain.endswith(":"):
        raise Unsupported("': ' inside a plain value")
    return _plain(plain)


def _only_comment(rest: str) -> None:
    rest = rest.strip(" ")
    if rest and not rest.startswith("#"):
        raise Unsupported(f"{rest[:20]!r} after a value")


def _plain(text: str) -> Any:
    """A plain scalar, resolved as PyYAML's SafeLoader resolves it."""
    if text in _NULLS:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    first = text[0]
    if first in "+-" and text[1:2] not in ("", " ", ".", *"0123456789"):
        return text  # `--region`: no number starts so (and `- ` was an item)
    if first in _NUMERIC_START:
        digits = text[1:] if first in "+-" else text
        if digits.isdigit() and digits.isascii() and (digits == "0" or digits[0] != "0"):
            return int(text)
        raise Unsupported(f"{text[:20]!r}: a number, timestamp or merge key for PyYAML")
    if first in _INDICATORS:
        raise Unsupported(f"a plain scalar starting with {first!r}")
    return text


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The quoted scalar at text[start] (its quote), and the index after its end."""
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                if text[i + 1 : i + 2] == "'":
                    out.append("'")
                    i += 2
                    continue
                return "".join(out), i + 1
            out.append(c)
            i += 1
            continue
        if c == '"':
            return "".join(out), i + 1
        if c != "\\":
            out.append(c)
            i += 1
            continue
        escape = text[i + 1 : i + 2]
        if escape in _ESCAPES:
            out.append(_ESCAPES[escape])
            i += 2
        elif escape in _HEX_ESCAPES:
            width = _HEX_ESCAPES[escape]
            digits = text[i + 2 : i + 2 + width]
            if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
                raise Unsupported("a malformed escape")
            code = int(digits, 16)
            if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                raise Unsupported("a surrogate or out-of-range escape")
            out.append(chr(code))
            i += 2 + width
        else:
            raise Unsupported(f"the escape \\{escape}")
    raise Unsupported("a quoted scalar continued on the next line")


class _Flow:
    """A flow collection on one line: `{k: v, ...}`, `[a, b]`, nested, with quoted or
    plain scalars."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _skip(self, i: int) -> int:
        while i < len(self.text) and self.text[i] == " ":
            i += 1
        return i

    def node(self, i: int) -> tuple[Any, int]:
        i = self._skip(i)
        if i >= len(self.text):
            raise Unsupported("a flow collection continued on the next line")
        c = self.text[i]
        if c == "{":
            return self._mapping(i + 1)
        if c == "[":
            return self._sequence(i + 1)
        if c in "\"'":
            return _quoted(self.text, i)
        return self._plain(i)

    def _plain(self, i: int) -> tuple[Any, int]:
        text = self.text
        start = i
        while i < len(text):
            c = text[i]
            if c in _FLOW_STOPS:
                break
            if c == ":" and (i + 1 == len(text) or text[i + 1] in " ,[]{}"):
                break
            if c == "#" and i > start and text[i - 1] == " ":
                raise Unsupported("a comment inside a flow collection")
            i += 1
        raw = text[start:i].rstrip(" ")
        return (None if not raw else _plain(raw)), i

    def _mapping(self, i: int) -> tuple[dict[str, Any], int]:
        result: dict[str, Any] = {}
        text = self.text
        while True:
            i = self._skip(i)
            if i < len(text) and text[i] == "}":
                return result, i + 1
            if i < len(text) and text[i] in "[{":
                raise Unsupported("a collection as a key")
            key, i = self.node(i)
            if not isinstance(key, str):
                raise Unsupported("a key that is not a string")
            i = self._skip(i)
            if i >= len(text) or text[i] != ":":
                raise Unsupported("a flow mapping entry without ':'")
            value, i = self.node(i + 1)
            result[key] = value
            i = self._skip(i)
            if i < len(text) and text[i] == ",":
                i += 1
            elif i < len(text) and text[i] == "}":
                continue
            else:
                raise Unsupported("a flow mapping without ',' or '}'")

    def _sequence(self, i: int) -> tuple[list[Any], int]:
        result: list[Any] = []
        text = self.text
        while True:
            i = self._skip(i)
            if i < len(text) and text[i] == "]":
                return result, i + 1
            if i < len(text) and text[i] == ",":
                raise Unsupported("an empty flow sequence entry")
            value, i = self.node(i)
            i = self._skip(i)
            if i < len(text) and text[i] == ":":
                raise Unsupported("a single-pair mapping in a flow sequence")
            result.append(value)
            if i < len(text) and text[i] == ",":
                i += 1
            elif i < len(text) and text[i] == "]":
                continue
            else:
                raise Unsupported("a flow sequence without ',' or ']'")
