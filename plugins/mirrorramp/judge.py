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

Repeated looks: Lan-DeMets alpha spending with an O'Brien-Fleming-type function over the
information fraction t = min(1, time in the step / hold). A look spends alpha(t_k) -
alpha(t_{k-1}) on its fail side (one-sided bound at that level); by the union bound the
looks of a hold period together false-fail with probability <= alpha = 1 - confidence,
whatever the overlap of their windows. The pass side uses the nominal level at every look: a
false pass only ends a hold sooner, it never removes a mirror.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

from mirrorramp.model import Verdict

METRICS = ("error_ratio", "latency")
DEFAULT_TOLERANCE = 0.25
DEFAULT_CONFIDENCE = 0.99
DEFAULT_MIN_SAMPLES = 200
DEFAULT_MIN_DIFFERENCE = 0.001
# The shift search range: a candidate 10^6 times faster or slower is off the scale.
SHIFT_RANGE = (1e-6, 1e6)
_BISECTIONS = 200
_NORMAL = NormalDist()


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
    lower: float | None  # at the look's spent alpha (the fail side)
    upper: float | None  # at the nominal alpha (the pass side)
    tolerance: float
    n_candidate: float
    n_baseline: float
    reason: str
    extra: dict = field(default_factory=dict)


# -- alpha spending ----------------------------------------------------------------------------


def obrien_fleming_spent(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending: alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)).

    The alpha spent up to information fraction t (0 at t = 0, `alpha` at t >= 1).
    """
    if t <= 0:
        return 0.0
    z = _NORMAL.inv_cdf(1.0 - alpha / 2.0)
    return math.erfc(z / math.sqrt(2.0 * min(t, 1.0)))


@dataclass(frozen=True)
class Spending:
    """What one judge gate has spent in the current step: stored in RampState.judge_spending.

    started_at: the step's step_started_at (another value: a new step, nothing spent yet);
    period: 0 for the hold, k for the k-th hold length after it; t: the information fraction
    of the last look in the period; spent: alpha spent in the period so far.
    """

    started_at: float
    period: int
    t: float
    spent: float

    def as_dict(self) -> dict:
        return {"started_at": self.started_at, "period": self.period, "t": self.t, "spent": self.spent}

    @classmethod
    def of(cls, record: Mapping | None) -> Spending | None:
        if not record:
            return None
        return cls(float(record["started_at"]), int(record["period"]), float(record["t"]), float(record["spent"]))


@dataclass(frozen=True)
class Look:
    """When a look happens: its step's start and hold, the time, what was spent before.

    `share`: the part of this look's increment a judgement may spend; the runner's two looks of
    one pass (the recent window and the whole step) get half each, so together they spend one
    increment (the union bound again).
    """

    step_started_at: float
    hold_seconds: float
    now: float
    spending: Mapping[str, Mapping] = field(default_factory=dict)
    share: float = 1.0


def _position(look: Look) -> tuple[int, float]:
    """(period, t) of a look: period 0 is the hold, t = elapsed / hold capped at 1."""
    elapsed = max(0.0, look.now - look.step_started_at)
    if look.hold_seconds <= 0:
        return 0, 1.0
    if elapsed <= look.hold_seconds:
        return 0, elapsed / look.hold_seconds
    period = math.ceil(elapsed / look.hold_seconds) - 1
    return period, min(1.0, elapsed / look.hold_seconds - period)


def spend(look: Look | None, gate: str, alpha: float) -> tuple[float, Spending | None]:
    """(the fail side's alpha for this look, the new record) for `gate`.

    Without a Look (a one-off check) the look is a single test at `alpha`. A look at or after
    the end of a period whose last look came before it closes that period at t = 1 first (the
    whole step judged at the end of its hold); later looks start new periods of one hold each.
    A look at no later t than the last spends nothing (it cannot fail).
    """
    if look is None:
        return alpha, None
    period, t = _position(look)
    before = Spending.of(look.spending.get(gate))
    if before is None or before.started_at != look.step_started_at or before.period > period:
        before = Spending(look.step_started_at, period, 0.0, 0.0)
    elif before.period < period:
        if before.t < 1.0:
            period, t = before.period, 1.0  # this look closes the period it belongs to
        else:
            before = Spending(look.step_started_at, period, 0.0, 0.0)
    if t <= before.t:
        return 0.0, before
    spent = obrien_fleming_spent(t, alpha)
    return look.share * max(0.0, spent - before.spent), Spending(look.step_started_at, period, t, spent)


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
    fail_alpha: float,
) -> Judgement:
    """Non-inferiority of the candidate's 5xx ratio against the baseline's.

    FAIL: MN ratio lower bound (one-sided, level `fail_alpha`) > 1 + tolerance and Newcombe
    difference lower bound (same level) > min_difference. PASS: at least min_samples requests
    on each side, and MN ratio upper bound <= 1 + tolerance or Newcombe difference upper bound
    <= min_difference (one-sided, level 1 - confidence). Otherwise INCONCLUSIVE.
    """
    xc, nc, xb, nb = errors_candidate, total_candidate, errors_baseline, total_baseline
    limit = 1.0 + settings.tolerance

    def judgement(verdict: Verdict, estimate, lower, upper, reason: str, extra: dict | None = None) -> Judgement:
        return Judgement("error_ratio", verdict, estimate, lower, upper, limit, nc, nb, reason, extra or {})

    if nc <= 0 or nb <= 0:
        side = "candidate" if nc <= 0 else "baseline"
        return judgement(Verdict.INCONCLUSIVE, None, None, None, f"no requests at the {side} in the window")
    xc, xb = min(max(xc, 0.0), nc), min(max(xb, 0.0), nb)
    z_fail, z_pass = z_one_sided(fail_alpha), z_one_sided(settings.alpha)
    ratio_lower = ratio_bound(xc, nc, xb, nb, z_fail, upper=False)
    ratio_upper = ratio_bound(xc, nc, xb, nb, z_pass, upper=True)
    diff_lower = newcombe_difference(xc, nc, xb, nb, z_fail)[0] if not math.isinf(z_fail) else -1.0
    diff_upper = newcombe_difference(xc, nc, xb, nb, z_pass)[1]
    estimate = (xc / nc) / (xb / nb) if xb > 0 else (math.inf if xc > 0 else math.nan)
    extra = {
        "ratio_candidate": xc / nc,
        "ratio_baseline": xb / nb,
        "difference": xc / nc - xb / nb,
        "difference_interval": [diff_lower, diff_upper],
        "min_difference": settings.min_difference,
    }
    interval = f"ratio {_show(estimate)} [{_show(ratio_lower)}, {_show(ratio_upper)}]"
    if ratio_lower > limit and diff_lower > settings.min_difference:
        reason = f"{interval} above {limit:g} and difference > {settings.min_difference:g}"
        return judgement(Verdict.FAIL, estimate, ratio_lower, ratio_upper, reason, extra)
    within = ratio_upper <= limit or diff_upper <= settings.min_difference
    too_few = _too_few(settings, nc, nb)
    if within and not too_few:
        reason = f"{interval} within {limit:g} (or difference <= {settings.min_difference:g})"
        return judgement(Verdict.PASS, estimate, ratio_lower, ratio_upper, reason, extra)
    reason = f"{interval} not yet within {limit:g}{too_few}"
    return judgement(Verdict.INCONCLUSIVE, estimate, ratio_lower, ratio_upper, reason, extra)


def _show(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.3g}"


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


def _log_edges(bounds: Sequence[float]) -> list[tuple[float, float]]:
    """Each finite bucket as [log lower, log upper]; the first bucket (0, le_0] is taken as one
    bucket width (of the next bucket, in log) below le_0: log-uniform needs a positive floor."""
    finite = [b for b in bounds if math.isfinite(b)]
    edges = []
    for i, upper in enumerate(finite):
        if i > 0:
            edges.append((math.log(finite[i - 1]), math.log(upper)))
        else:
            width = math.log(finite[1] / finite[0]) if len(finite) > 1 and finite[0] > 0 else math.log(10.0)
            edges.append((math.log(upper) - width, math.log(upper)))
    return edges


def _uniform_greater(a: float, b: float, c: float, d: float) -> float:
    """P(U > V) for independent U ~ Uniform[a, b] and V ~ Uniform[c, d] (b > a, d > c)."""

    def integral(u: float) -> float:  # the integral of P(V < x) dx from -inf to u
        if u <= c:
            return 0.0
        if u >= d:
            return (d - c) / 2 + (u - d)
        return (u - c) ** 2 / (2 * (d - c))

    return (integral(b) - integral(a)) / (b - a)


def shifted_theta(
    bounds: Sequence[float], candidate: Sequence[float], baseline: Sequence[float], shift: float
) -> float:
    """theta(C, shift * B): the mass in each finite bucket log-uniform, the +Inf bucket above
    every finite value (a tie with the other side's +Inf bucket). At shift 1 it equals
    mann_whitney_theta (two log-uniform values in one bucket: each above with probability 1/2)."""
    return theta_of_shift(bounds, candidate, baseline)(shift)


def theta_of_shift(
    bounds: Sequence[float], candidate: Sequence[float], baseline: Sequence[float]
) -> Callable[[float], float]:
    """shifted_theta as a function of the shift, the buckets prepared once (root finding calls
    it a hundred times)."""
    edges = _log_edges(bounds)
    k = len(edges)
    pairs = float(sum(candidate)) * float(sum(baseline))
    c_finite = [(c, *edges[i]) for i, c in enumerate(candidate) if c > 0 and i < k]
    b_finite = [(b, *edges[j]) for j, b in enumerate(baseline) if b > 0 and j < k]
    c_inf = sum(c for i, c in enumerate(candidate) if i >= k)
    b_inf = sum(b for j, b in enumerate(baseline) if j >= k)
    # Shift-free parts: a candidate +Inf is above every finite baseline value, ties the +Inf ones.
    fixed = c_inf * (sum(b for b, _, _ in b_finite) + b_inf / 2)

    def theta(shift: float) -> float:
        log_shift = math.log(shift)
        total = fixed
        for c, a1, b1 in c_finite:
            for b, a2, b2 in b_finite:
                total += c * b * _uniform_greater(a1, b1, a2 + log_shift, b2 + log_shift)
        return total / pairs

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
    fail_alpha: float,
) -> Judgement:
    """Non-inferiority of the candidate's latency: the multiplicative shift s (candidate ~ s x
    baseline) with theta(C, s B) = 1/2, and its interval by inverting the rank test over s:
    the ends where (theta(s) - 1/2) / sd = +z (lower, z at `fail_alpha`) and -z (upper, z at
    1 - confidence). sd is the null standard deviation of U / (n_c n_b) without the tie
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
    theta = mann_whitney_theta(candidate, baseline)
    sd = math.sqrt(u_null_variance(candidate, baseline, ties=False)) / (n_c * n_b)
    z_fail, z_pass = z_one_sided(fail_alpha), z_one_sided(settings.alpha)

    theta_at = theta_of_shift(bounds, candidate, baseline)

    def distance(shift: float) -> float:
        return theta_at(shift) - 0.5

    estimate = _solve_shift(distance)
    lower = 0.0 if math.isinf(z_fail) else _solve_shift(lambda s: distance(s) - z_fail * sd)
    upper = _solve_shift(lambda s: distance(s) + z_pass * sd)
    extra = {"theta": theta}
    interval = f"shift {_show(estimate)}x [{_show(lower)}, {_show(upper)}]"
    if lower > limit:
        return judgement(Verdict.FAIL, estimate, lower, upper, f"{interval} above {limit:g}", extra)
    too_few = _too_few(settings, n_c, n_b)
    if upper <= limit and not too_few:
        return judgement(Verdict.PASS, estimate, lower, upper, f"{interval} within {limit:g}", extra)
    return judgement(
        Verdict.INCONCLUSIVE, estimate, lower, upper, f"{interval} not yet within {limit:g}{too_few}", extra
    )
