"""Percentiles of measurements (latency, CPU time, frame rates), one definition for the
whole project: linear interpolation between the closest ranks (numpy's default), so the
50th percentile is the median as :func:`statistics.median` gives it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["median", "median_or_none", "percentile"]


def _array(values: Iterable[float] | npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    if isinstance(values, np.ndarray):
        return values.astype(np.float64, copy=False)
    return np.asarray(list(values), dtype=np.float64)


def percentile(values: Iterable[float] | npt.NDArray[Any], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values``; raises :class:`ValueError` for no
    values or ``q`` outside [0, 100]."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside [0, 100]")
    data = _array(values)
    if data.size == 0:
        raise ValueError("percentile of no values")
    return float(np.percentile(data, q))


def median(values: Iterable[float] | npt.NDArray[Any]) -> float:
    """The median of ``values`` (the 50th :func:`percentile`)."""
    return percentile(values, 50)


def median_or_none(values: Iterable[float] | npt.NDArray[Any],
                   ndigits: int | None = None) -> float | None:
    """The median rounded to ``ndigits`` (``None``: not rounded), or ``None`` for no values."""
    data = _array(values)
    if data.size == 0:
        return None
    m = percentile(data, 50)
    return m if ndigits is None else round(m, ndigits)
