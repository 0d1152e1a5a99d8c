"""Checked conversion of configuration text, with errors of the form "key = value, must be ..."."""

from __future__ import annotations

import math


def number_in_range(
    key: str,
    raw: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    error: type[ValueError] = ValueError,
) -> float:
    """`raw` as a finite float in [low; high] (or (low; high] with `low_open`)."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        bound = f"({low:g}; {high:g}]" if low_open else f"[{low:g}; {high:g}]"
        raise error(f"{key} = {shown(raw)}, must be a number in {bound}")
    return value


def int_in_range(
    key: str, raw: str, low: int, high: int, *, error: type[ValueError] = ValueError
) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise error(f"{key} = {shown(raw)}, must be an integer in [{low}; {high}]")
    return value


def shown(raw: str, limit: int = 80) -> str:
    """`raw` quoted for an error message, cut short so a huge value cannot flood the log."""
    return repr(raw if len(raw) <= limit else raw[:limit] + "...")
