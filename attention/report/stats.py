"""Statistics of study tables: seed means with t intervals, and McNemar's exact test on paired errors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
PERCENT = (0.0, 100.0)  # the range an error rate in percent can take


@dataclass(frozen=True)
class SeedSummary:
    """Mean over seeds of one row's numbers, with the sample standard deviation and the 95% t interval
    of the mean (None with a single seed: one seed says nothing about the spread). The interval of
    a quantity with a range (``bounds``, e.g. :data:`PERCENT`) is cut to it: with two or three seeds the t
    interval is wide, and an error rate's interval reaching below 0% would only claim the impossible."""

    n: int
    mean: float
    sd: float | None
    low: float | None
    high: float | None


def seed_summary(values: Sequence[float], bounds: tuple[float, float] | None = None) -> SeedSummary:
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarise")
    n, mean = len(values), float(np.mean(values))
    if n == 1:
        return SeedSummary(1, mean, None, None, None)
    sd = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return SeedSummary(n, mean, sd, low, high)


def where_paper_falls(paper: float, summary: SeedSummary) -> str:
    """Where the paper's number lies against ours: 'ours lower', 'ours higher' or 'within our interval'
    (with one seed, only lower or higher than our number)."""
    if summary.low is not None and summary.low <= paper <= summary.high:
        return "within our 95% interval"
    if summary.mean < paper:
        return f"ours {paper - summary.mean:.2f} lower"
    if summary.mean > paper:
        return f"ours {summary.mean - paper:.2f} higher (worse)"
    return "equal"


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two classifiers on the same images: ``only_a`` images only A gets right,
    ``only_b`` only B; the p-value is the two-sided binomial test of ``only_a`` out of the discordant pairs
    against 1/2."""

    only_a: int
    only_b: int
    p_value: float


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    a_correct, b_correct = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a_correct.shape != b_correct.shape:
        raise ValueError("McNemar's test needs both models' results on the same images")
    return _sign_test(int(np.sum(a_correct & ~b_correct)), int(np.sum(~a_correct & b_correct)))


def _sign_test(for_a: int, for_b: int) -> McNemar:
    """The two-sided exact binomial test of ``for_a`` out of ``for_a + for_b`` against 1/2."""
    untied = for_a + for_b
    p = 1.0 if untied == 0 else float(stats.binomtest(for_a, untied, 0.5).pvalue)
    return McNemar(for_a, for_b, p)


def format_p(p_value: float) -> str:
    """``p = 0.0175``, or ``p < 1e-300`` where the exact p-value is below what a double holds and the test
    returned 0: a p-value is never zero, and printing "p = 0" would say it was."""
    return f"p = {p_value:.3g}" if p_value > 0 else "p < 1e-300"


def pooled_sign_test(a_correct: Sequence[np.ndarray], b_correct: Sequence[np.ndarray]) -> McNemar:
    """Two recipes compared over several pairs of models (one per seed) on the same images, the image as
    the unit: for each image, how many of A's models got it right minus how many of B's; ``only_a`` counts
    the images where A's were right more often, ``only_b`` where B's were, and the p-value is the two-sided
    sign test of those counts. Images are independent; the pairs of models are not, since a hard image is
    hard for every seed, so joining the pairs' images as if they were new images (one McNemar test on the
    concatenation) would overstate the evidence. With one pair this is McNemar's exact test."""
    if len(a_correct) != len(b_correct) or not a_correct:
        raise ValueError("the pooled test needs one result of A and one of B per pair, at least one pair")
    a = np.stack([np.asarray(bits, bool) for bits in a_correct]).astype(int)
    b = np.stack([np.asarray(bits, bool) for bits in b_correct]).astype(int)
    if a.shape != b.shape:
        raise ValueError("the pooled test needs every model's results on the same images")
    difference = (a - b).sum(axis=0)
    return _sign_test(int(np.sum(difference > 0)), int(np.sum(difference < 0)))
