"""The study statistics against values computed by hand."""

import math

import numpy as np
import pytest

from attention.report.stats import (
    PERCENT,
    format_p,
    mcnemar_exact,
    pooled_sign_test,
    seed_summary,
    where_paper_falls,
)


def test_seed_summary_is_the_mean_the_sample_sd_and_the_t_interval():
    summary = seed_summary([1.0, 2.0, 3.0])
    assert summary.mean == 2.0 and summary.sd == 1.0
    # t(0.975, 2 degrees of freedom) = 4.302653; half width = 4.302653 * 1 / sqrt(3) = 2.484138
    assert summary.low == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert summary.high == pytest.approx(2.0 + 2.484138, abs=1e-6)


def test_an_error_rate_interval_is_cut_to_the_range_an_error_rate_can_take():
    # two seeds far apart (a soft reader that left its plateau on one seed only): t(0.975, 1) = 12.7062,
    # so the raw interval is 18.83 -+ 12.7062 * sd / sqrt(2), reaching far below 0% and above 100%
    values = [9.82, 27.84]
    raw, cut = seed_summary(values), seed_summary(values, PERCENT)
    assert raw.low < 0 and raw.high > 100
    assert (cut.low, cut.high) == (0.0, 100.0)
    assert (cut.mean, cut.sd) == (raw.mean, raw.sd)
    inside, uncut = seed_summary([1.0, 1.2, 1.4], PERCENT), seed_summary([1.0, 1.2, 1.4])
    assert 0 < inside.low and (inside.low, inside.high) == (uncut.low, uncut.high)  # inside: as it is


def test_one_seed_has_no_spread_or_interval():
    summary = seed_summary([1.13])
    assert (summary.n, summary.mean, summary.sd, summary.low, summary.high) == (1, 1.13, None, None, None)


def test_mcnemar_exact_counts_discordant_pairs_and_gives_the_binomial_p_value():
    a = np.array([1, 1, 1, 1, 1, 0, 1, 0], bool)
    b = np.array([0, 0, 0, 0, 1, 1, 1, 0], bool)
    result = mcnemar_exact(a, b)
    assert (result.only_a, result.only_b) == (4, 1)
    # two-sided exact: P(X <= 1) + P(X >= 4) for X ~ Bin(5, 1/2) = (1 + 5 + 5 + 1) / 32
    assert result.p_value == pytest.approx(12 / 32)


def test_mcnemar_of_identical_predictions_is_one_and_needs_equal_lengths():
    same = np.array([1, 0, 1], bool)
    assert mcnemar_exact(same, same).p_value == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(same, same[:2])


def test_the_pooled_test_counts_each_image_once_however_many_seed_pairs_agree_on_it():
    a = np.array([1, 1, 1, 1, 1, 0, 1, 0], bool)
    b = np.array([0, 0, 0, 0, 1, 1, 1, 0], bool)
    one = pooled_sign_test([a], [b])
    assert one == mcnemar_exact(a, b)  # one pair: McNemar's exact test
    # three seeds that agree image for image are no more evidence than one: the same counts and p-value
    # (joining them as 24 images would give 12 vs 3, p = 0.035)
    assert pooled_sign_test([a, a, a], [b, b, b]) == one
    # per image, A's right answers over the pairs minus B's: +2, -1, 0 (ties drop out), +1
    a2 = [np.array([1, 0, 1, 1], bool), np.array([1, 0, 0, 1], bool)]
    b2 = [np.array([0, 1, 0, 0], bool), np.array([0, 0, 1, 1], bool)]
    result = pooled_sign_test(a2, b2)
    assert (result.only_a, result.only_b) == (2, 1) and result.p_value == 1.0
    with pytest.raises(ValueError):
        pooled_sign_test([a], [b, b])


def test_where_the_paper_falls():
    summary = seed_summary([1.0, 1.2, 1.4])
    assert where_paper_falls(1.1, summary) == "within our 95% interval"
    assert where_paper_falls(5.0, summary).startswith("ours 3.80 lower")
    assert "higher" in where_paper_falls(0.1, seed_summary([1.0]))
    assert math.isclose(seed_summary([1.0, 1.2, 1.4]).mean, 1.2)


def test_a_p_value_below_what_a_double_holds_is_not_printed_as_zero():
    lopsided = mcnemar_exact(np.ones(3000, bool), np.zeros(3000, bool))
    assert lopsided.p_value == 0.0  # 2 * 0.5**3000 underflows
    assert format_p(lopsided.p_value) == "p < 1e-300"
    assert format_p(0.0175) == "p = 0.0175" and format_p(2.55e-67) == "p = 2.55e-67"
