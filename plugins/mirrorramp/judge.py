"""The statistical judge: is the candidate worse than its baseline, and with what confidence.

Pure functions, no I/O: counts and bucket vectors in, a Judgement out (gates.py queries
Prometheus and builds the GateResult). Both metrics are non-inferiority tests with three
verdicts: FAIL when the interval shows the candidate worse than the tolerance, PASS when it
shows the candidate within the tolerance (and each side has at least `min_samples` requests),
INCONCLUSIVE otherwise: "not significantly worse" with ten requests is not a pass.

- error_ratio: the ratio p_c / p_b of the two 5xx ratios with the Miettinen-Nurminen score
  interval (inverted by bisection), and the difference p_c - p_b with Newcombe's hybrid score
  interval (Wilson intervals of each side). FAIL needs both a ratio above 1 + tolerance and a
  difference above `min_difference`; PASS needs either within (two near-zero ratios pass on
  the difference). Counts may be fractional: increase() extrapolates.
- latency: the Mann-Whitney statistic theta = P(C > B) + P(C = B) / 2 computed exactly from
  the two Istio bucket-count vectors (the same bucket is a tie), and the multiplicative shift
  s with theta(C, s * B) = 1/2 (a Hodges-Lehmann-like estimate) with its interval from
  inverting the rank test over s. FAIL when the interval's lower end is above 1 + tolerance,
  PASS when its upper end is at most 1 + tolerance.

Repeated looks: every look judges the whole step so far (the counts since the step started),
and both ends of every interval are drawn at the z of a confidence sequence (`sequence_z`:
Robbins' normal-mixture boundary, in its asymptotic form), not at a fixed-sample z. A
confidence sequence covers the true value at every look at once, however many there are and
whenever they come, with probability >= confidence: a watch loop's polls, scheduled runs minutes
or days apart and a hold extended by a pause all keep the false-fail (and false-pass) rate of a
step at 1 - confidence, with no record of earlier looks.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

from mirrorramp.model import Verdict
from mirrorramp.wording import interval

METRICS = ("error_ratio", "latency")
DEFAULT_TOLERANCE = 0.25
# Per metric: the smallest latency regression worth catching (+25 %, Kayenta's tolerance) must
# lie beyond the tolerance, or a non-inferiority test can never fail it; at 0.10 a +25 % shift
# is caught with ~250 effective samples at a fixed look (docs/benchmarks.md has the floors).
DEFAULT_TOLERANCES = {"error_ratio": DEFAULT_TOLERANCE, "latency": 0.10}
DEFAULT_CONFIDENCE = 0.99
DEFAULT_MIN_SAMPLES = 200
DEFAULT_MIN_DIFFERENCE = 0.001
# Where each metric's confidence sequence is narrowest, in effective samples (sequence_z). A
# latency regression worth catching shows within tens to hundreds of requests a side (the
# fixed-sample floors of docs/benchmarks.md: x2 22, +50 % 82, +25 % 483), so its sequence is
# tuned to 100: z 3.7 at the first minute of a 1 % mirror, 4.2 after a day of it. An error
# ratio needs thousands (floors 511 to 20,435): tuned to 2,000, its z is within 11 % of the
# narrowest possible from 500 to 100,000 (tests/unit/test_judge.py).
SEQUENCE_TUNED_FOR = {"latency": 100.0, "error_ratio": 2000.0}
# The shift search range: a candidate 10^6 times faster or slower is off the scale.
SHIFT_RANGE = (1e-6, 1e6)
_BISECTIONS = 200
# Quadrature nodes per occupied bucket in theta_of_shift (the midpoint rule over equal shares).
SLICES = 16
_NORMAL = NormalDist()
_SQRT2 = math.sqrt(2.0)


# -- helpers -----------------------------------------------------------------------------------


def z_one_sided(alpha: float) -> float:
    """The standard normal quantile z with P(Z > z) = alpha; +Inf when alpha is 0."""
    if alpha <= 0:
        return math.inf
    # -Phi^-1(alpha), not Phi^-1(1 - alpha): an early look's spent alpha (1e-30 at t = 0.01)
    # rounds 1 - alpha to 1.0, which inv_cdf refuses.
    return -_NORMAL.inv_cdf(alpha) if alpha < 0.5 else _NORMAL.inv_cdf(1.0 - alpha)


def _bisect(f, lo: float, hi: float) -> float:
    """The root of `f` (f(lo) > 0 >= f(hi), f decreasing) between lo and hi, in log space."""
    a, b = math.log(lo), math.log(hi)
    for _ in range(_BISECTIONS):
        mid = (a + b) / 2
        if f(math.exp(mid)) > 0:
            a = mid
        else:
            b = mid
        if b - a < 1e-10:
            break
    return math.exp((a + b) / 2)


@dataclass(frozen=True)
class Judgement:
    """One judge's answer: the estimate, its one-sided bounds, the verdict and why."""

    metric: str
    verdict: Verdict
    estimate: float | None
    lower: float | None  # both ends at the confidence sequence's z (sequence_z)
    upper: float | None
    tolerance: float
    n_candidate: float
    n_baseline: float
    reason: str
    extra: dict = field(default_factory=dict)


# -- repeated looks: the confidence sequence --------------------------------------------------


def effective_samples(n_candidate: float, n_baseline: float) -> float:
    """n_c n_b / (n_c + n_b): the sample size of the comparison (a difference of two means has
    variance sigma^2 (1/n_c + 1/n_b) = sigma^2 / this); 0 when a side has none."""
    if n_candidate <= 0 or n_baseline <= 0:
        return 0.0
    return n_candidate * n_baseline / (n_candidate + n_baseline)


def sequence_z(n_effective: float, alpha: float, tuned_for: float) -> float:
    """The normal quantile of a two-sided (1 - alpha) confidence sequence at `n_effective`.

    Robbins' normal mixture: for a statistic with independent increments and variance V (in
    samples), P(exists V: |S_V| >= sqrt((V + rho) (2 log(1/alpha) + log((V + rho) / rho)))) <=
    alpha, Ville's inequality on the mixture martingale. Divided by sqrt(V) it is the z an
    interval needs. rho = tuned_for / (2 log(1/alpha) + log(1 + 2 log(1/alpha))) makes the
    boundary narrowest at `tuned_for` samples (Waudby-Smith et al., "Time-uniform central limit
    theory and asymptotic confidence sequences", 2021, who give the asymptotic version for
    estimated variances). Each side is covered with probability >= 1 - alpha at every look.
    +Inf with no samples.
    """
    if n_effective <= 0:
        return math.inf
    log_alpha = 2.0 * math.log(1.0 / alpha)
    rho = tuned_for / (log_alpha + math.log(1.0 + log_alpha))
    return math.sqrt((n_effective + rho) / n_effective * (log_alpha + math.log((n_effective + rho) / rho)))


# -- error ratio -------------------------------------------------------------------------------


def wilson_interval(count: float, total: float, z: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion count/total at normal quantile z."""
    if total <= 0:
        return 0.0, 1.0
    if math.isinf(z):
        return 0.0, 1.0
    p = count / total
    denominator = 1.0 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_difference(x1: float, n1: float, x2: float, n2: float, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score interval (method 10, Wilson without continuity correction) for
    p1 - p2 at normal quantile z (both ends at the same z)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def ratio_score(x1: float, n1: float, x2: float, n2: float, ratio: float) -> float:
    """The Miettinen-Nurminen score statistic of H0: p1 / p2 = ratio (with the N / (N - 1)
    variance factor); decreasing in `ratio`."""
    n = n1 + n2
    a = n * ratio
    b = -(n1 * ratio + x1 + n2 + x2 * ratio)
    c = x1 + x2
    p2 = (-b - math.sqrt(max(0.0, b * b - 4 * a * c))) / (2 * a)
    p1 = p2 * ratio
    variance = (p1 * (1 - p1) / n1 + ratio * ratio * p2 * (1 - p2) / n2) * n / (n - 1)
    numerator = x1 / n1 - ratio * x2 / n2
    if variance <= 0:
        return math.copysign(math.inf, numerator) if numerator else 0.0
    return numerator / math.sqrt(variance)


def ratio_bound(x1: float, n1: float, x2: float, n2: float, z: float, *, upper: bool) -> float:
    """One end of the Miettinen-Nurminen score interval for p1 / p2 at normal quantile z:
    the ratio where the score equals +z (lower end) or -z (upper end), by bisection."""
    if math.isinf(z):
        return math.inf if upper else 0.0
    if not upper and x1 <= 0:
        return 0.0
    if upper and x2 <= 0:
        return math.inf
    target = -z if upper else z
    lo, hi = SHIFT_RANGE
    if ratio_score(x1, n1, x2, n2, lo) - target <= 0:
        return lo
    if ratio_score(x1, n1, x2, n2, hi) - target > 0:
        return hi
    return _bisect(lambda r: ratio_score(x1, n1, x2, n2, r) - target, lo, hi)


@dataclass(frozen=True)
class Settings:
    """A judge gate's statistical settings (gates.JudgeGate carries them)."""

    tolerance: float = DEFAULT_TOLERANCE
    confidence: float = DEFAULT_CONFIDENCE
    min_samples: int = DEFAULT_MIN_SAMPLES
    min_difference: float = DEFAULT_MIN_DIFFERENCE

    @property
    def alpha(self) -> float:
        return 1.0 - self.confidence


def _too_few(settings: Settings, n_candidate: float, n_baseline: float) -> str:
    if n_candidate < settings.min_samples or n_baseline < settings.min_samples:
        return f"; a pass needs {settings.min_samples} requests on each side"
    return ""


def judge_error_ratio(
    errors_candidate: float,
    total_candidate: float,
    errors_baseline: float,
    total_baseline: float,
    settings: Settings,
) -> Judgement:
    """Non-inferiority of the candidate's 5xx ratio against the baseline's, all ends at the
    confidence sequence's z for these sample sizes (sequence_z).

    FAIL: MN ratio lower bound > 1 + tolerance and Newcombe difference lower bound >
    min_difference. PASS: at least min_samples requests on each side, and MN ratio upper bound
    <= 1 + tolerance or Newcombe difference upper bound <= min_difference. Otherwise
    INCONCLUSIVE.
    """
    xc, nc, xb, nb = errors_candidate, total_candidate, errors_baseline, total_baseline
    limit = 1.0 + settings.tolerance

    def judgement(verdict: Verdict, estimate, lower, upper, reason: str, extra: dict | None = None) -> Judgement:
        return Judgement("error_ratio", verdict, estimate, lower, upper, limit, nc, nb, reason, extra or {})

    if nc <= 0 or nb <= 0:
        side = "candidate" if nc <= 0 else "baseline"
        return judgement(Verdict.INCONCLUSIVE, None, None, None, f"no requests at the {side} in the window")
    xc, xb = min(max(xc, 0.0), nc), min(max(xb, 0.0), nb)
    z = sequence_z(effective_samples(nc, nb), settings.alpha, SEQUENCE_TUNED_FOR["error_ratio"])
    ratio_lower = ratio_bound(xc, nc, xb, nb, z, upper=False)
    ratio_upper = ratio_bound(xc, nc, xb, nb, z, upper=True)
    diff_lower, diff_upper = newcombe_difference(xc, nc, xb, nb, z)
    estimate = (xc / nc) / (xb / nb) if xb > 0 else (math.inf if xc > 0 else math.nan)
    extra = {
        "ratio_candidate": xc / nc,
        "ratio_baseline": xb / nb,
        "difference": xc / nc - xb / nb,
        "difference_interval": [diff_lower, diff_upper],
        "min_difference": settings.min_difference,
        "z": z,
    }
    shown = f"ratio {interval(estimate, ratio_lower, ratio_upper)}"
    if ratio_lower > limit and diff_lower > settings.min_difference:
        reason = f"{shown} above {limit:g} and difference > {settings.min_difference:g}"
        return judgement(Verdict.FAIL, estimate, ratio_lower, ratio_upper, reason, extra)
    within = ratio_upper <= limit or diff_upper <= settings.min_difference
    too_few = _too_few(settings, nc, nb)
    if within and not too_few:
        reason = f"{shown} within {limit:g} (or difference <= {settings.min_difference:g})"
        return judgement(Verdict.PASS, estimate, ratio_lower, ratio_upper, reason, extra)
    reason = f"{shown} not yet within {limit:g}{too_few}"
    return judgement(Verdict.INCONCLUSIVE, estimate, ratio_lower, ratio_upper, reason, extra)


# -- latency -----------------------------------------------------------------------------------


def bucket_counts(cumulative: Mapping[float, float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(upper bounds, per-bucket counts) from cumulative `le` counts (le -> count, +Inf included).

    increase() extrapolates each series on its own, so a cumulative count can come out a hair
    below the one before it: a negative bucket is read as 0.
    """
    bounds = tuple(sorted(cumulative))
    counts, previous = [], 0.0
    for bound in bounds:
        value = cumulative[bound]
        counts.append(max(0.0, value - previous))
        previous = max(previous, value)
    return bounds, tuple(counts)


def mann_whitney_theta(candidate: Sequence[float], baseline: Sequence[float]) -> float:
    """theta = P(C > B) + P(C = B) / 2 over two per-bucket count vectors of the same buckets
    (a request in the same bucket as another is a tie): U / (n_c n_b) of the Mann-Whitney
    test with ties."""
    below, total_b, u = 0.0, float(sum(baseline)), 0.0
    for c, b in zip(candidate, baseline, strict=True):
        u += c * (below + b / 2)
        below += b
    n_c = float(sum(candidate))
    return u / (n_c * total_b)


def u_null_variance(candidate: Sequence[float], baseline: Sequence[float], *, ties: bool = True) -> float:
    """The null variance of U: n_c n_b / 12 ((N + 1) - sum(t^3 - t) / (N (N - 1))), t the
    pooled count of each bucket (the tie correction; ties=False leaves it out)."""
    n_c, n_b = float(sum(candidate)), float(sum(baseline))
    n = n_c + n_b
    correction = 0.0
    if ties and n > 1:
        correction = sum((c + b) ** 3 - (c + b) for c, b in zip(candidate, baseline, strict=True)) / (n * (n - 1))
    return n_c * n_b / 12.0 * ((n + 1) - correction)


def _floor(finite: Sequence[float]) -> float:
    """The lower end of the first bucket (0, le_0] on a log scale: one bucket width (of the next
    bucket, in log) below le_0; nothing on a log scale reaches 0."""
    width = math.log(finite[1] / finite[0]) if len(finite) > 1 else math.log(10.0)
    return math.log(finite[0]) - width


@dataclass(frozen=True)
class _Histogram:
    """One side's latency distribution on a log scale, from its bucket counts.

    The counts say how many requests fell between two bounds, not where. Within a bucket whose
    both ends have a cumulative share strictly between 0 and 1 (a shaped bucket), the share's
    normal quantile is taken as a straight line in log latency, which is exactly how a
    log-normal distribution fills its buckets: placing the mass log-uniformly instead estimated
    a true x1.25 shift as x1.237, and a candidate at the tolerance passed. The first and last
    occupied buckets (a share of 0 or 1 at one end) continue the line of their shaped
    neighbour, cut at the bucket's end; with no shaped neighbour they are log-uniform. The
    +Inf bucket is above every finite value.
    """

    logs: tuple[float, ...]  # the floor, then the log of each finite bound
    shares: tuple[float, ...]  # the cumulative share of all requests at each of those
    lines: tuple[tuple[float, float] | None, ...]  # per bucket: the normal quantile line at its ends

    @classmethod
    def of(cls, finite: Sequence[float], counts: Sequence[float]) -> _Histogram:
        """From the finite bounds and the count of every bucket, +Inf's last."""
        total = float(sum(counts))
        logs, shares, running = [_floor(finite)], [0.0], 0.0
        for bound, count in zip(finite, counts, strict=False):  # the +Inf count has no bound
            running += count
            logs.append(math.log(bound))
            shares.append(min(1.0, running / total))
        quantiles = [_NORMAL.inv_cdf(p) if 0.0 < p < 1.0 else None for p in shares]
        lines: list[tuple[float, float] | None] = [
            (q0, q1) if q0 is not None and q1 is not None else None for q0, q1 in itertools.pairwise(quantiles)
        ]
        for k in range(len(lines)):
            if lines[k] is not None or shares[k + 1] <= shares[k]:
                continue
            for neighbour, anchor in ((k + 1, k + 1), (k - 1, k)):  # the line through the shared bound
                if 0 <= neighbour < len(lines) and (shaped := _slope(logs, neighbour, lines)) is not None:
                    q = quantiles[anchor]
                    lines[k] = (q + shaped * (logs[k] - logs[anchor]), q + shaped * (logs[k + 1] - logs[anchor]))
                    break
        return cls(tuple(logs), tuple(shares), tuple(lines))

    @property
    def finite_share(self) -> float:
        return self.shares[-1]

    @property
    def resolved(self) -> bool:
        """Whether a bucket shows the distribution's shape (three occupied buckets or more): with
        fewer, a shift inside the buckets is invisible and no within-bucket model can be checked."""
        return any(self._quantile_ends(k) for k in range(len(self.lines)))

    def _quantile_ends(self, k: int) -> bool:
        return self.shares[k] > 0.0 and self.shares[k + 1] < 1.0 and self.shares[k + 1] > self.shares[k]

    def _cut(self, k: int) -> tuple[float, float, float, float] | None:
        """(a0, a1, Phi(a0), Phi(a1)) of bucket k's line, None when it is log-uniform."""
        line = self.lines[k]
        if line is None:
            return None
        p0, p1 = _phi(line[0]), _phi(line[1])
        if p1 - p0 < 1e-12:  # a line too steep to place anything: log-uniform instead
            return None
        return line[0], line[1], p0, p1

    def at(self, y: float) -> float:
        """The share of requests at or below log latency y."""
        logs = self.logs
        if y <= logs[0]:
            return 0.0
        if y >= logs[-1]:
            return self.shares[-1]
        k = bisect.bisect_right(logs, y) - 1
        fraction = (y - logs[k]) / (logs[k + 1] - logs[k])
        mass = self.shares[k + 1] - self.shares[k]
        cut = self._cut(k)
        if cut is None:
            return self.shares[k] + fraction * mass
        a0, a1, p0, p1 = cut
        return self.shares[k] + mass * (_phi(a0 + fraction * (a1 - a0)) - p0) / (p1 - p0)

    def slices(self) -> list[tuple[float, float]]:
        """(log latency, share) at the middle of SLICES equal shares of each occupied finite
        bucket: the quadrature nodes of an integral over this side's requests."""
        nodes = []
        for k in range(len(self.logs) - 1):
            mass = self.shares[k + 1] - self.shares[k]
            if mass <= 0:
                continue
            cut = self._cut(k)
            for j in range(SLICES):
                within = (j + 0.5) / SLICES  # the share of the bucket's mass below this node
                if cut is None:
                    fraction = within
                else:
                    a0, a1, p0, p1 = cut
                    fraction = (_NORMAL.inv_cdf(p0 + within * (p1 - p0)) - a0) / (a1 - a0)
                nodes.append((self.logs[k] + fraction * (self.logs[k + 1] - self.logs[k]), mass / SLICES))
        return nodes


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / _SQRT2)


def _slope(logs: Sequence[float], k: int, lines: Sequence[tuple[float, float] | None]) -> float | None:
    """The normal quantile line's slope in shaped bucket k (per unit of log latency)."""
    line = lines[k]
    if line is None:
        return None
    return (line[1] - line[0]) / (logs[k + 1] - logs[k])


def shifted_theta(
    bounds: Sequence[float], candidate: Sequence[float], baseline: Sequence[float], shift: float
) -> float:
    """theta(C, shift * B) under the within-bucket model of _Histogram."""
    return theta_of_shift(bounds, candidate, baseline)(shift)


def theta_of_shift(
    bounds: Sequence[float], candidate: Sequence[float], baseline: Sequence[float]
) -> Callable[[float], float]:
    """theta(C, s B) = P(C > s B) as a function of the shift s, the buckets prepared once (root
    finding calls it a hundred times): the integral of the shifted baseline's share below each
    candidate request, by the midpoint rule over SLICES equal shares of each candidate bucket
    (exact at s = 1 for two equal histograms: theta = 1/2). A candidate request in +Inf is
    above every finite baseline value and ties the baseline's +Inf ones."""
    finite = [b for b in bounds if math.isfinite(b)]
    c_side, b_side = _Histogram.of(finite, candidate), _Histogram.of(finite, baseline)
    nodes = c_side.slices()
    c_inf, b_finite = 1.0 - c_side.finite_share, b_side.finite_share
    fixed = c_inf * (b_finite + (1.0 - b_finite) / 2)

    def theta(shift: float) -> float:
        log_shift = math.log(shift)
        return fixed + sum(weight * b_side.at(y - log_shift) for y, weight in nodes)

    return theta


def _positive_buckets(
    bounds: Sequence[float], candidate: Sequence[float], baseline: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """The buckets with a bound <= 0 (le="0": nothing is faster) merged into the first positive
    one: a log scale has no room for them."""
    keep = [i for i, bound in enumerate(bounds) if bound > 0]
    if len(keep) == len(bounds) or not keep:
        return tuple(bounds), tuple(candidate), tuple(baseline)
    first = keep[0]

    def merged(counts: Sequence[float]) -> tuple[float, ...]:
        return (sum(counts[: first + 1]), *(counts[i] for i in keep[1:]))

    return tuple(bounds[i] for i in keep), merged(candidate), merged(baseline)


def _solve_shift(f) -> float:
    """The shift where decreasing f crosses 0, clamped to SHIFT_RANGE."""
    lo, hi = SHIFT_RANGE
    if f(lo) <= 0:
        return lo
    if f(hi) > 0:
        return hi
    return _bisect(f, lo, hi)


def judge_latency(
    bounds: Sequence[float],
    candidate: Sequence[float],
    baseline: Sequence[float],
    settings: Settings,
) -> Judgement:
    """Non-inferiority of the candidate's latency: the multiplicative shift s (candidate ~ s x
    baseline) with theta(C, s B) = 1/2, and its interval by inverting the rank test over s:
    the ends where (theta(s) - 1/2) / sd = +z (lower) and -z (upper), z the confidence
    sequence's for these sample sizes (sequence_z). sd is the null standard deviation of U / (n_c n_b) without the tie
    correction: the shifted buckets no longer tie, and the untied variance is the larger, so
    the interval errs wide. FAIL: lower > 1 + tolerance; PASS: upper <= 1 + tolerance and at
    least min_samples requests on each side.
    """
    bounds, candidate, baseline = _positive_buckets(bounds, candidate, baseline)
    n_c, n_b = float(sum(candidate)), float(sum(baseline))
    limit = 1.0 + settings.tolerance

    def judgement(verdict: Verdict, estimate, lower, upper, reason: str, extra: dict | None = None) -> Judgement:
        return Judgement("latency", verdict, estimate, lower, upper, limit, n_c, n_b, reason, extra or {})

    if n_c <= 0 or n_b <= 0:
        side = "candidate" if n_c <= 0 else "baseline"
        return judgement(Verdict.INCONCLUSIVE, None, None, None, f"no requests at the {side} in the window")
    if sum(1 for b in bounds if math.isfinite(b)) < 2:
        return judgement(Verdict.INCONCLUSIVE, None, None, None, "fewer than two finite histogram buckets")
    finite = [b for b in bounds if math.isfinite(b)]
    unresolved = [
        side
        for side, counts in (("candidate", candidate), ("baseline", baseline))
        if not _Histogram.of(finite, counts).resolved
    ]
    if unresolved:
        # Two occupied buckets hold any shift that stays inside them (30 ms -> 45 ms is all in
        # (25, 50]): an estimate there is the within-bucket model's guess, never evidence.
        reason = (
            f"the {' and '.join(unresolved)} latency fills fewer than 3 histogram buckets: they cannot show a "
            f"shift of {limit:g}x; render finer buckets (docs/configuration.md, judges)"
        )
        return judgement(Verdict.INCONCLUSIVE, None, None, None, reason, {"unresolved": unresolved})
    theta = mann_whitney_theta(candidate, baseline)
    sd = math.sqrt(u_null_variance(candidate, baseline, ties=False)) / (n_c * n_b)
    z = sequence_z(effective_samples(n_c, n_b), settings.alpha, SEQUENCE_TUNED_FOR["latency"])

    theta_at = theta_of_shift(bounds, candidate, baseline)

    def distance(shift: float) -> float:
        return theta_at(shift) - 0.5

    estimate = _solve_shift(distance)
    lower = _solve_shift(lambda s: distance(s) - z * sd)
    upper = _solve_shift(lambda s: distance(s) + z * sd)
    extra = {"theta": theta, "z": z}
    shown = f"shift {interval(estimate, lower, upper, 'x')}"
    if lower > limit:
        return judgement(Verdict.FAIL, estimate, lower, upper, f"{shown} above {limit:g}", extra)
    too_few = _too_few(settings, n_c, n_b)
    if upper <= limit and not too_few:
        return judgement(Verdict.PASS, estimate, lower, upper, f"{shown} within {limit:g}", extra)
    return judgement(Verdict.INCONCLUSIVE, estimate, lower, upper, f"{shown} not yet within {limit:g}{too_few}", extra)
