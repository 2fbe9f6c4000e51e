"""Shared building blocks of the lockgate API models.

Every model's docstring and every field's ``description`` end up in the generated CRDs, so
they are written for the person running ``kubectl explain``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr
from pydantic.alias_generators import to_camel

PERCENT_RE = re.compile(r"^(100|[1-9][0-9]?|0)%$")
# The same pattern in the CRDs' CEL rules, so admission and the models agree.
PERCENT_CEL = "^(100|[1-9][0-9]?|0)%$"


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


class MemoModel(ApiModel):
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
    if not PERCENT_RE.match(value):
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


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: str = Field(min_length=1)
    """Name of the object."""


class SecretKeyReference(ApiModel):
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
