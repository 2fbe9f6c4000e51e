"""Benchmarks (figures, never asserted); what several of them print alike is here."""

from __future__ import annotations

import statistics


def median_range(seconds: list[float]) -> str:
    """`1.39 s (1.17-1.83)`: the median and, in parentheses, the lowest and highest."""
    return f"{statistics.median(seconds):.2f} s ({min(seconds):.2f}-{max(seconds):.2f})"
