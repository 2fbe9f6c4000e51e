"""The router interface every traffic backend implements (set, verify, remove)."""

from __future__ import annotations

from typing import Protocol


class Router(Protocol):
    async def ensure_route(self) -> None:
        """Create what routes traffic to the application if it is missing; keep weights."""

    async def set_weights(self, stable: int, canary: int) -> None:
        """Declare the split. A side with weight 0 is left out of the weighted list."""

    async def live_weights(self) -> tuple[int, int] | None:
        """The split the proxy is serving now, or None when it cannot be confirmed."""


def split(weights: dict[str, int]) -> tuple[int, int] | None:
    """(stable, canary) percent from the summed child weights of each role; None if empty."""
    total = weights.get("stable", 0) + weights.get("canary", 0)
    if total == 0:
        return None
    canary = round(100 * weights.get("canary", 0) / total)
    return (100 - canary, canary)
