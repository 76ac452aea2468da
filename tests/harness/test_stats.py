"""surnn.harness.stats: Welch's t-test and the incomplete beta function against textbook
values, mean and spread across seeds."""

from __future__ import annotations

import pytest

from surnn.harness.stats import betainc, mean_std, welch


def test_betainc_gives_the_t_distributions_critical_values():
    for df, t in ((1, 12.7062), (4, 2.776445), (30, 2.042272)):  # two-sided p = 0.05
        assert betainc(df / 2, 0.5, df / (df + t * t)) == pytest.approx(0.05, abs=1e-6)
    assert betainc(2.5, 1, 0.4) == pytest.approx(0.4**2.5, rel=1e-12)  # I_x(a, 1) = x^a
    assert betainc(3.0, 2.0, 0.0) == 0.0 and betainc(3.0, 2.0, 1.0) == 1.0
    # symmetry I_x(a, b) = 1 - I_{1-x}(b, a), across the side switch of the fraction
    assert betainc(2.0, 5.0, 0.7) == pytest.approx(1 - betainc(5.0, 2.0, 0.3), rel=1e-12)


def test_welch_equals_student_for_equal_variances_and_handles_constants():
    w = welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert w["diff"] == -3.0 and w["df"] == pytest.approx(4.0)
    assert w["t"] == pytest.approx(-3.674235, rel=1e-6)
    assert w["p"] == pytest.approx(0.021312, rel=1e-4)
    assert welch([1.0, 1.0], [2.0, 2.0])["p"] == 0.0
    assert welch([1.0, 1.0], [1.0, 1.0])["p"] == 1.0
    with pytest.raises(ValueError):
        welch([1.0], [2.0, 3.0])


def test_mean_std_has_no_spread_from_one_value():
    assert mean_std([2.0]) == (2.0, None)
    m, s = mean_std([1.0, 2.0, 3.0])
    assert m == 2.0 and s == pytest.approx(1.0)
