"""Secret values never reach status, Events, logs or metrics.

Every value lockgate reads from a Secret is registered with the one Redactor of the
operator's Runtime; status, Events and, through `RedactingFilter`, every log line (so also
the Events kopf posts from its log) pass through it."""

from __future__ import annotations

import base64
import logging
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "[redacted]"

# Values (and lines of multi-line values) shorter than this are not masked: masking a
# 3-character value would mask it in every word and number that contains it, destroying
# the messages that say what went wrong, and a value that short protects nothing anyway.
MIN_LENGTH = 4


def _base64_cores(raw: bytes) -> set[str]:
    """What any base64 text containing `raw` contains, whatever the alignment of `raw` in
    the encoded bytes: for each of the 3 offsets, the characters made of `raw`'s bits
    only (the edge characters also carry bits of the neighbouring bytes)."""
    cores = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        start = -(-8 * shift // 6)  # the first character with no bit of the padding
        end = 8 * (shift + len(raw)) // 6  # past the last character made of raw's bits only
        core = encoded[start:end]
        cores.add(core)
        cores.add(core.translate(str.maketrans("+/", "-_")))  # the URL-safe alphabet
    return cores


def forms(value: str) -> set[str]:
    """The ways a secret value shows up in text: as is, each line of a multi-line value
    (a PEM key's lines appear on their own in an SSH or TLS library's error), with its
    line breaks escaped (in a repr or JSON), base64- and URL-encoded."""
    lines = [line.strip() for line in value.splitlines()]
    found = {value, value.strip(), *lines, value.replace("\n", "\\n")}
    found |= _base64_cores(value.encode())
    found |= {quote(value, safe=""), quote_plus(value, safe="")}
    return {form for form in found if len(form) >= MIN_LENGTH}


class Redactor:
    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._forms: list[str] = []  # longest first, so a longer form is masked whole

    def add(self, value: str) -> None:
        if value in self._secrets:
            return
        self._secrets.add(value)
        self._forms = sorted(set(self._forms) | forms(value), key=len, reverse=True)

    def text(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        return text

    def tree(self, value: Any) -> Any:
        if not self._forms:
            return value  # nothing to mask: no need to walk a ~20 KB status (0.15 ms)
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.tree(v) for v in value]
        if isinstance(value, dict):
            return {k: self.tree(v) for k, v in value.items()}
        return value


class RedactingFilter(logging.Filter):
    """Masks secrets in a log record before any handler formats it: the message with its
    arguments, the traceback and the stack. The record is changed in place, so every
    handler after this one (the console, kopf's Event poster) sees the masked text."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # arguments that do not fit: logging would print both
            message = f"{record.msg} {record.args!r}"
        record.msg = self.redactor.text(message)
        record.args = None
        if record.exc_info:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            # Without exc_info, every formatter (also JSON ones, which format exc_info
            # themselves) prints exc_text, the masked one.
            record.exc_info = None
            record.exc_text = text
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor.text(record.stack_info)
        return True


def install_log_redaction(redactor: Redactor) -> RedactingFilter:
    """Puts one RedactingFilter on every handler of the root logger (where lockgate's and
    kopf's lines end up) and of kopf's per-object logger (whose handler posts Events).
    Handler filters, not logger filters: a logger's filter misses its children's records."""
    redacting = RedactingFilter(redactor)
    for logger in (logging.getLogger(), logging.getLogger("kopf.objects")):
        for handler in logger.handlers:
            for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
                handler.removeFilter(old)  # a restarted operator replaces, never stacks
            handler.addFilter(redacting)
    return redacting
