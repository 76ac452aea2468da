"""Statistics of results across seeds: mean and spread, and Welch's t-test between arms.

The tables (``scripts/make_tables.py``, ``plot_memory.py``, ``surrogate_table.py``) report
each arm as the mean and sample standard deviation over its seeds, and compare arms with
Welch's two-sided t-test (unequal variances). The t distribution's tail comes from the
regularised incomplete beta function, computed here by its continued fraction, so the
harness needs no scipy.
"""

from __future__ import annotations

import math
import statistics


def mean_std(xs: list[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation; no spread from one value (None)."""
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction
    (modified Lentz), on the side of x where it converges fast."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - betainc(b, a, 1.0 - x)
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return front * f / a


def welch(a: list[float], b: list[float]) -> dict:
    """Welch's t-test of mean(a) = mean(b) (unequal variances), two-sided: the difference
    of the means, t, the Welch-Satterthwaite degrees of freedom and p. Needs 2 values in
    each; p is 0 when both samples are constant and differ, 1 when they are equal."""
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        raise ValueError("Welch's t-test needs at least 2 values per sample")
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a) / na, statistics.variance(b) / nb
    diff = ma - mb
    if va + vb == 0.0:
        return {
            "diff": diff,
            "t": math.copysign(math.inf, diff) if diff else 0.0,
            "df": float(na + nb - 2),
            "p": 0.0 if diff else 1.0,
        }
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    p = betainc(df / 2.0, 0.5, df / (df + t * t))
    return {"diff": diff, "t": t, "df": df, "p": p}
