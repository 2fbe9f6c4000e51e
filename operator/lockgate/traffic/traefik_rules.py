"""Header routes in Traefik's rule syntax, for both routers (IngressRoute and file provider);
the cookie pattern is also the Gateway API router's.

A header route is the Application's own rule AND any of the route's conditions: Traefik gives
a longer rule a higher priority by default, and lockgate sets that priority explicitly, so the
header route always wins over the Application's route for the requests it matches.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from lockgate.engine.model import HeaderRule

_RE2_SPECIAL = set("\\.+*?()|[]{}^$")


def re2_literal(text: str) -> str:
    """`text` as an RE2 pattern matching exactly it."""
    return "".join(f"\\{c}" if c in _RE2_SPECIAL else c for c in text)


def condition(rule: HeaderRule) -> str:
    """One condition as a Traefik matcher. A cookie is matched inside the Cookie header:
    its name at the start or after `; `, its value up to the next `;` or the end."""
    if rule.header is not None:
        if rule.exact is not None:
            return f"Header(`{rule.header}`, `{rule.exact}`)"
        return f"HeaderRegexp(`{rule.header}`, `{rule.regex}`)"
    return f"HeaderRegexp(`Cookie`, `{cookie_regex(rule)}`)"


def cookie_regex(rule: HeaderRule) -> str:
    """A cookie condition as an RE2 pattern over the Cookie header (Traefik's HeaderRegexp,
    and a Gateway API header match of type RegularExpression, which Traefik turns into it)."""
    assert rule.cookie is not None
    if rule.exact is not None:
        value = re2_literal(rule.exact)
    else:
        value = f"(?:{(rule.regex or '').removeprefix('^').removesuffix('$')})"
    return f"(?:^|;\\s*){re2_literal(rule.cookie)}={value}(?:;|$)"


def header_rule(base: str, rules: Sequence[HeaderRule]) -> str:
    """The header route's rule: the Application's rule and any of the conditions."""
    conditions = " || ".join(condition(r) for r in rules)
    return f"({base}) && ({conditions})"


def header_priority(base: str, rules: Sequence[HeaderRule]) -> int:
    """Above the Application's route (whose default priority is its rule's length, and the
    header route's rule contains it), as Traefik would rank them by default, but explicit."""
    return len(header_rule(base, rules))


def encode(rules: Iterable[HeaderRule]) -> str:
    """The rules as lockgate records them beside the route it wrote (an annotation, a
    comment in the file), to read them back exactly."""
    return json.dumps(
        [
            {
                k: v
                for k, v in (
                    ("header", r.header),
                    ("cookie", r.cookie),
                    ("exact", r.exact),
                    ("regex", r.regex),
                )
                if v is not None
            }
            for r in rules
        ],
        sort_keys=True,
        separators=(",", ":"),
    )


def decode(text: str | None) -> tuple[HeaderRule, ...]:
    """What `encode` wrote; nothing for anything else."""
    if not text:
        return ()
    try:
        items = json.loads(text)
    except ValueError:
        return ()
    if not isinstance(items, list):
        return ()
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append(
                HeaderRule(
                    header=item.get("header"),
                    cookie=item.get("cookie"),
                    exact=item.get("exact"),
                    regex=item.get("regex"),
                )
            )
    return tuple(out)
