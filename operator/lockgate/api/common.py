"""Shared building blocks of the lockgate API models.

Every model's docstring and every field's ``description`` end up in the generated CRDs, so
they are written for the person running ``kubectl explain``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

# Every regular expression here is written once and used twice: by the models (Python's
# `re.fullmatch`) and by the API server (the CRDs' OpenAPI `pattern` or CEL `matches`, Go's
# RE2, which searches). So each is anchored with ^...$ and uses only explicit ASCII classes
# (Python's \w and \d also match non-ASCII digits and letters, RE2's do not), and Python
# matches them with fullmatch (its `$` would also match before a final newline).
PERCENT_CEL = "^(100|[1-9][0-9]?|0)%$"
PERCENT_RE = re.compile(PERCENT_CEL)

# An image reference, by the OCI distribution grammar (github.com/distribution/reference):
#   reference := name [ ":" tag ] [ "@" digest ]
#   name      := [ domain "/" ] path-component [ "/" path-component ]*
#   domain    := host [ ":" port ]; host := domain-name | "[" IPv6 "]"
_ALNUM = "[a-z0-9]+"
_SEPARATOR = "(?:[._]|__|[-]+)"
_PATH_COMPONENT = f"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = f"(?:{_DOMAIN_COMPONENT}(?:\\.{_DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])"
_DOMAIN = f"{_HOST}(?::[0-9]+)?"
_NAME = f"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_PATTERN = f"^{_NAME}(?::{_TAG})?(?:@{_DIGEST})?$"
"""The OpenAPI `pattern` of every image field in the CRDs, and the models' check."""
IMAGE_RE = re.compile(IMAGE_PATTERN)


def image_problem(value: str) -> str | None:
    """Why `value` is not an image reference, or None when it is one."""
    if IMAGE_RE.fullmatch(value):
        return None
    return (
        f"{value!r} is not an image reference [registry[:port]/]name[:tag][@digest] "
        "(e.g. registry.example.com:5000/team/shop:2.1; lowercase name, no spaces or "
        "shell characters, a tag of at most 128 of A-Za-z0-9_.-, a digest sha256:<hex>)"
    )


def check_image(field: str, value: str) -> str:
    """`value` if it is an image reference; else an error naming `field` (e.g. spec.image)."""
    problem = image_problem(value)
    if problem is not None:
        raise PydanticCustomError(
            "image_reference", "{field}: {problem}", {"field": field, "problem": problem}
        )
    return value


class ApiModel(BaseModel):
    """Base of every spec/status model: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=False,
    )

    def wire(self) -> dict[str, Any]:
        """The object as it is stored in Kubernetes: camelCase, without unset optionals."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class SpecModel(ApiModel):
    """A part of a spec: what a user writes and the API server admits.

    Validated the way the API server validates it, so that `lockgate plan` and admission
    refuse the same documents:

    - types are strict: `"3"` is not an integer nor `"true"` a boolean (the CRD schema refuses
      them; pydantic's lax mode would convert them);
    - a null is an absent field (the API server prunes nulls of non-nullable fields, then
      applies defaults), except where `wire_nulls_refused` says the field is not in the
      schema (canary steps: the API server keeps their nulls, and the policy refuses them);
    - an integer field takes a JSON number without a fraction (`3.0`), as the API server's
      schema validation does, except where `wire_integer_floats` is false (canary steps:
      the policy's CEL sees `3.0` as a double and refuses it).
    """

    model_config = ConfigDict(strict=True)

    wire_nulls_refused: ClassVar[str | None] = None
    """When set, a null value is refused with this message instead of dropped."""
    wire_integer_floats: ClassVar[bool] = True

    @model_validator(mode="before")
    @classmethod
    def _as_the_api_server_reads_it(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        integers = _integer_keys(cls) if cls.wire_integer_floats else frozenset()
        out: dict[str, Any] = {}
        for key, value in data.items():
            if value is None:
                if cls.wire_nulls_refused is not None:
                    raise ValueError(cls.wire_nulls_refused)
                continue
            if isinstance(value, float) and value.is_integer() and key in integers:
                value = int(value)
            out[key] = value
        return out


_INTEGER_KEYS: dict[type[BaseModel], frozenset[str]] = {}


def _integer_keys(cls: type[BaseModel]) -> frozenset[str]:
    """The keys (aliases and names) of the fields typed as plain integers."""
    try:
        return _INTEGER_KEYS[cls]
    except KeyError:
        keys = frozenset(
            key
            for name, info in cls.model_fields.items()
            if info.annotation in (int, int | None)
            for key in (name, info.alias or name)
        )
        _INTEGER_KEYS[cls] = keys
        return keys


class MemoModel(SpecModel):
    """A spec whose derived values (plans, fingerprints) are computed once per parsed object.

    Parsed specs are treated as immutable: the controller parses them afresh per reconcile.
    """

    _memo: dict[Any, Any] = PrivateAttr(default_factory=dict)

    def memo(self, key: Any, compute: Any) -> Any:
        """`compute()` once per object and key."""
        memo = self.__pydantic_private__["_memo"]  # type: ignore[index]
        try:
            return memo[key]
        except KeyError:
            value = memo[key] = compute()
            return value


def _check_int_or_percent(value: int | str) -> int | str:
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must be a non-negative integer or a percentage like '25%'")
        return value
    if not PERCENT_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an integer or a percentage like '25%' (0% to 100%)")
    return value


IntOrPercent = Annotated[int | str, AfterValidator(_check_int_or_percent)]
"""An instance count (``3``) or a share of all instances (``"25%"``)."""


def resolve_int_or_percent(value: int | str, total: int, *, round_up: bool) -> int:
    """The count that ``value`` stands for out of ``total`` instances."""
    if isinstance(value, int):
        return value
    percent = int(value.rstrip("%"))
    scaled = total * percent
    return -(-scaled // 100) if round_up else scaled // 100


class LocalObjectReference(SpecModel):
    """A reference to an object in the same namespace."""

    name: str = Field(min_length=1)
    """Name of the object."""


class SecretKeyReference(SpecModel):
    """One key of a Secret in the same namespace."""

    name: str = Field(min_length=1)
    """Name of the Secret."""
    key: str = Field(min_length=1)
    """Key inside the Secret's data."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str
    """Condition type: Ready, Progressing, Degraded, Reconciling or Stalled."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = ""
    """One CamelCase word saying why."""
    message: str = ""
    """Human-readable detail."""
    last_transition_time: datetime | None = None
    """When the status last changed."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed for."""
