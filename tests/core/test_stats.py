"""One percentile definition (syncclass.stats) for benchmarks, tests and the code."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from syncclass.stats import median, median_or_none, percentile


def test_percentile_interpolates_like_numpy_and_median_like_statistics() -> None:
    values = [5.0, 1.0, 4.0, 2.0]
    assert median(values) == statistics.median(values) == 3.0
    assert percentile(values, 95) == pytest.approx(float(np.percentile(values, 95)))
    assert percentile((v for v in values), 0) == 1.0  # any iterable
    assert percentile(np.array([7, 9], dtype=np.int16), 100) == 9.0
    assert median_or_none([1.234, 2.0, 9.9], 1) == 2.0
    assert median_or_none([]) is None


def test_no_values_or_a_bad_rank_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)
