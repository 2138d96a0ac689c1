"""The benchmarks' statistics: the interval their verdicts on a median are read with."""
from __future__ import annotations

import random

from benchmarks.common import median_interval


def test_the_median_interval_takes_the_order_statistics_of_its_coverage() -> None:
    assert median_interval([9, 1, 8, 2, 7, 3, 6, 4, 5]) == (2, 8, 1 - 2 * 10 / 2 ** 9)
    low, high, covered = median_interval(list(range(1, 21)))
    assert (low, high) == (6, 15) and 0.95 <= covered < 0.96
    assert median_interval([3, 1, 2]) == (1, 3, 0.75)  # too few for 95 %: all of them


def test_the_median_interval_covers_the_median_as_often_as_it_says() -> None:
    """Samples of nine from a distribution whose median is 0.5: the interval holds it in
    ~96.1 % of 4,000 draws (the binomial's standard error is 0.3 %)."""
    draw = random.Random(1)
    held = 0
    for _ in range(4000):
        low, high, covered = median_interval([draw.random() for _ in range(9)])
        held += low <= 0.5 <= high
    assert abs(held / 4000 - covered) < 0.012
