"""Limits of one container, in docker's units (nano-CPUs and bytes)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_MEMORY_UNITS = {
    "": 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    # docker's own suffixes (`--memory 512m`) are binary
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
}


def parse_memory(text: str) -> int:
    """Bytes of "512Mi", "1Gi", "1G" (decimal) or docker's "512m" (binary)."""
    match = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|k|m|g|K|M|G)?", text.strip())
    if not match:
        raise ValueError(f"invalid memory quantity {text!r}")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""]


def parse_cpus(text: str) -> int:
    """NanoCPUs of a decimal CPU count ("0.5" -> 500_000_000)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"invalid CPU quantity {text!r}") from None
    if value < 0:
        raise ValueError(f"invalid CPU quantity {text!r}")
    return int(value * 1_000_000_000)


@dataclass(frozen=True)
class Resources:
    """Limits of one container: nano-CPUs and bytes (0 = unlimited)."""

    nano_cpus: int = 0
    memory: int = 0

    @classmethod
    def parse(cls, cpus: str | None, memory: str | None) -> Resources:
        return cls(parse_cpus(cpus) if cpus else 0, parse_memory(memory) if memory else 0)

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.nano_cpus + other.nano_cpus, self.memory + other.memory)

    def times(self, n: int) -> Resources:
        return Resources(self.nano_cpus * n, self.memory * n)
