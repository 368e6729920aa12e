"""The statistical judge against reference computations (scipy, statsmodels: tests only)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, norm
from statsmodels.stats.proportion import confint_proportions_2indep

from mirrorramp import judge
from mirrorramp.judge import Settings
from mirrorramp.model import Verdict

ISTIO_BUCKETS = (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, math.inf)

# -- error ratio: the intervals against statsmodels ---------------------------------------------

COUNTS = [
    pytest.param(5, 100, 2, 120, id="small"),
    pytest.param(0, 50, 3, 60, id="no-candidate-errors"),
    pytest.param(10.5, 300.2, 4, 250, id="fractional-increase"),
    pytest.param(30, 1000, 30, 1000, id="equal"),
    pytest.param(7, 40, 1, 900, id="unbalanced"),
]


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), COUNTS)
@pytest.mark.parametrize("alpha", [0.02, 0.2])
def test_miettinen_nurminen_ratio_interval_matches_statsmodels(x1, n1, x2, n2, alpha):
    expected = confint_proportions_2indep(x1, n1, x2, n2, method="score", compare="ratio", alpha=alpha)
    z = judge.z_one_sided(alpha / 2)
    assert judge.ratio_bound(x1, n1, x2, n2, z, upper=False) == pytest.approx(max(expected[0], 0), abs=1e-9)
    assert judge.ratio_bound(x1, n1, x2, n2, z, upper=True) == pytest.approx(expected[1], rel=1e-9)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), COUNTS)
@pytest.mark.parametrize("alpha", [0.02, 0.2])
def test_newcombe_difference_interval_matches_statsmodels(x1, n1, x2, n2, alpha):
    expected = confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff", alpha=alpha)
    got = judge.newcombe_difference(x1, n1, x2, n2, judge.z_one_sided(alpha / 2))
    assert got == pytest.approx(tuple(expected), abs=1e-12)


def test_ratio_bounds_without_errors_on_a_side():
    z = judge.z_one_sided(0.01)
    assert judge.ratio_bound(0, 100, 5, 100, z, upper=False) == 0.0
    assert judge.ratio_bound(5, 100, 0, 100, z, upper=True) == math.inf


# -- error ratio: the verdict rules ---------------------------------------------------------------

SETTINGS = Settings()  # tolerance 0.25, confidence 0.99, min_samples 200, min_difference 0.001


@pytest.mark.parametrize(
    ("counts", "verdict"),
    [
        pytest.param((100, 2000, 20, 2000), Verdict.FAIL, id="five-times-the-errors"),
        pytest.param((20, 2000, 20, 2000), Verdict.INCONCLUSIVE, id="equal-but-wide"),
        # The same ratios with 40,000 requests a side: the sequence's z (3.75) still leaves 1.3.
        pytest.param((400, 40000, 400, 40000), Verdict.INCONCLUSIVE, id="equal-not-yet-narrow"),
        pytest.param((1000, 100000, 1000, 100000), Verdict.PASS, id="equal-and-narrow"),
        pytest.param((0, 20000, 0, 50000), Verdict.PASS, id="no-errors-on-the-difference"),
        # 0 errors in 5000 does not show a ratio below 0.1 % at the sequence's z.
        pytest.param((0, 5000, 0, 50000), Verdict.INCONCLUSIVE, id="no-errors-not-enough-to-show"),
        pytest.param((0, 150, 0, 50000), Verdict.INCONCLUSIVE, id="no-errors-too-few-samples"),
        pytest.param((0, 10, 0, 10), Verdict.INCONCLUSIVE, id="ten-requests-is-no-pass"),
        pytest.param((3, 100000, 1, 100000), Verdict.PASS, id="near-zero-ratios-pass-on-difference"),
    ],
)
def test_error_ratio_verdicts(counts, verdict):
    got = judge.judge_error_ratio(*counts, SETTINGS)
    assert got.verdict is verdict, got.reason
    assert (got.n_candidate, got.n_baseline) == (counts[1], counts[3])


def test_error_ratio_fail_needs_both_the_ratio_and_the_difference():
    # 5x the errors, but 0.01 % against 0.002 %: under the 0.1-point floor, never a fail.
    got = judge.judge_error_ratio(50, 500000, 10, 500000, SETTINGS)
    assert got.lower > 1.25
    assert got.verdict is not Verdict.FAIL
    strict = judge.judge_error_ratio(50, 500000, 10, 500000, Settings(min_difference=0.0))
    assert strict.verdict is Verdict.FAIL


def test_error_ratio_without_requests_is_inconclusive():
    got = judge.judge_error_ratio(0, 0, 5, 100, SETTINGS)
    assert got.verdict is Verdict.INCONCLUSIVE
    assert "no requests at the candidate" in got.reason


@pytest.mark.parametrize(
    ("tolerance", "verdict"),
    [
        pytest.param(None, Verdict.FAIL, id="limit-just-below-the-lower-bound"),
        pytest.param("at", Verdict.INCONCLUSIVE, id="limit-at-the-lower-bound"),
    ],
)
def test_error_ratio_fail_boundary_is_strict(tolerance, verdict):
    counts = (100, 2000, 20, 2000)
    lower = judge.judge_error_ratio(*counts, SETTINGS).lower
    limit_tolerance = lower - 1 - 1e-9 if tolerance is None else lower - 1
    got = judge.judge_error_ratio(*counts, Settings(tolerance=limit_tolerance))
    assert got.verdict is verdict


# -- latency: the rank statistic against scipy ----------------------------------------------------

VECTORS = [
    pytest.param((0, 3, 2, 0, 1), (1, 1, 4, 0, 0), id="small"),
    pytest.param((5, 0, 0, 0, 0), (5, 0, 0, 0, 0), id="all-tied"),
    pytest.param((0, 0, 0, 2, 7), (9, 1, 0, 0, 0), id="separated"),
    pytest.param((1, 1, 1, 1, 1), (2, 0, 3, 0, 1), id="spread"),
]


def _samples(counts) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


@pytest.mark.parametrize(("candidate", "baseline"), VECTORS)
def test_theta_is_the_mann_whitney_u_with_ties(candidate, baseline):
    reference = mannwhitneyu(_samples(candidate), _samples(baseline), method="asymptotic", use_continuity=False)
    pairs = sum(candidate) * sum(baseline)
    assert judge.mann_whitney_theta(candidate, baseline) == pytest.approx(reference.statistic / pairs, abs=1e-12)


@pytest.mark.parametrize(("candidate", "baseline"), [v for v in VECTORS if v.id != "all-tied"])
def test_tie_corrected_u_variance_gives_scipys_p_value(candidate, baseline):
    reference = mannwhitneyu(_samples(candidate), _samples(baseline), method="asymptotic", use_continuity=False)
    u = judge.mann_whitney_theta(candidate, baseline) * sum(candidate) * sum(baseline)
    z = (u - sum(candidate) * sum(baseline) / 2) / math.sqrt(judge.u_null_variance(candidate, baseline))
    assert math.erfc(abs(z) / math.sqrt(2)) == pytest.approx(reference.pvalue, rel=1e-9)


@pytest.mark.parametrize("counts", [v.values[0] for v in VECTORS])
def test_shifted_theta_of_two_equal_histograms_at_one_is_one_half(counts):
    assert judge.shifted_theta((1, 5, 10, 25, math.inf), counts, counts, 1.0) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(
    ("median", "spread", "shift"),
    [(20, 0.5, 1.0), (20, 0.5, 1.25), (80, 0.8, 1.6), (3, 0.3, 0.8), (700, 0.4, 1.1)],
)
def test_shifted_theta_of_log_normal_buckets_is_the_exact_probability(median, spread, shift):
    """The bucket probabilities of two log-normals (no sampling): theta(C, s B) against the exact
    P(C > s B) = Phi((log(m_c / m_b) - log s) / (sigma sqrt 2)), for s around the true shift."""
    edges = np.array([0.0, *ISTIO_BUCKETS[:-1]])
    cdf = norm.cdf((np.log(np.maximum(edges[1:], 1e-300)) - math.log(median)) / spread)
    baseline = np.diff(np.concatenate(([0.0], cdf, [1.0])))
    cdf_c = norm.cdf((np.log(edges[1:]) - math.log(median * shift)) / spread)
    candidate = np.diff(np.concatenate(([0.0], cdf_c, [1.0])))
    for s in (shift / 1.2, shift, shift * 1.2):
        exact = norm.cdf((math.log(shift) - math.log(s)) / (spread * math.sqrt(2)))
        got = judge.shifted_theta(ISTIO_BUCKETS, candidate.tolist(), baseline.tolist(), s)
        assert got == pytest.approx(exact, abs=0.004)


def test_bucket_counts_from_cumulative_le_counts():
    bounds, counts = judge.bucket_counts({math.inf: 10.0, 5.0: 7.5, 1.0: 2.0, 10.0: 7.4})
    assert bounds == (1.0, 5.0, 10.0, math.inf)
    # 7.4 after 7.5: increase()'s extrapolation, read as an empty bucket.
    assert counts == pytest.approx((2.0, 5.5, 0.0, 2.5))


def _histogram(values: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return judge.bucket_counts({b: float((values <= b).sum()) for b in ISTIO_BUCKETS})


@pytest.mark.parametrize(
    ("factor", "verdict", "shift"),
    [
        pytest.param(1.0, Verdict.PASS, 1.0, id="identical"),
        pytest.param(2.0, Verdict.FAIL, 2.0, id="twice-as-slow"),
        pytest.param(0.5, Verdict.PASS, 0.5, id="twice-as-fast"),
    ],
)
def test_latency_shift_and_verdict(factor, verdict, shift):
    rng = np.random.default_rng(7)
    baseline = rng.lognormal(math.log(80), 0.8, 20000)
    bounds, b = _histogram(baseline)
    _, c = _histogram(baseline[:2000] * factor)
    got = judge.judge_latency(bounds, c, b, SETTINGS)
    assert got.verdict is verdict, got.reason
    assert got.estimate == pytest.approx(shift, rel=0.1)
    assert got.lower <= got.estimate <= got.upper
    assert (got.n_candidate, got.n_baseline) == (2000, 20000)


@pytest.mark.parametrize("factor", [1.0, 1.25, 1.5])
def test_latency_shift_inside_two_buckets_is_no_verdict(factor):
    """Log-normal, median 30 ms, log-sd 0.1: (10, 25] and (25, 50] hold everything, and x1.5
    (45 ms) stays in (25, 50]. Placing the mass inside the buckets estimated x1.08 and PASSED
    a 50 % slower candidate: with fewer than 3 occupied buckets the judge says it cannot tell."""
    rng = np.random.default_rng(3)
    baseline = rng.lognormal(math.log(30), 0.1, 50000)
    bounds, b = _histogram(baseline)
    _, c = _histogram(baseline * factor)
    got = judge.judge_latency(bounds, c, b, SETTINGS)
    assert got.verdict is Verdict.INCONCLUSIVE
    assert "fewer than 3 histogram buckets" in got.reason
    assert got.estimate is None


def test_a_zero_bucket_is_merged_into_the_first_positive_one():
    # le="0" has no place on a log scale: its requests join the (0, 10] bucket.
    with_zero = judge.judge_latency((0, 10, 100, 1000, math.inf), (5, 100, 150, 45, 0), (10, 140, 120, 30, 0), SETTINGS)
    merged = judge.judge_latency((10, 100, 1000, math.inf), (105, 150, 45, 0), (150, 120, 30, 0), SETTINGS)
    assert with_zero.estimate is not None
    assert (with_zero.estimate, with_zero.lower, with_zero.upper) == (merged.estimate, merged.lower, merged.upper)
    assert with_zero.extra["theta"] == merged.extra["theta"]


def test_latency_with_few_requests_is_no_pass():
    got = judge.judge_latency((10, 100, 1000, math.inf), (3, 4, 3, 0), (3, 4, 3, 0), SETTINGS)
    assert got.verdict is Verdict.INCONCLUSIVE
    assert "a pass needs 200 requests on each side" in got.reason


def test_latency_without_candidate_requests_is_inconclusive():
    got = judge.judge_latency((10, 100, math.inf), (0, 0, 0), (0, 10, 0), SETTINGS)
    assert got.verdict is Verdict.INCONCLUSIVE
    assert got.estimate is None


# -- repeated looks: the confidence sequence -------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.01, 0.05])
@pytest.mark.parametrize("n", [100.0, 2000.0, 50000.0])
def test_sequence_z_is_the_asymptotic_confidence_sequence_of_waudby_smith_et_al(alpha, n):
    """Their width (sigma = 1): sqrt(2 (t rho^2 + 1) / (t^2 rho^2) log(sqrt(t rho^2 + 1) / alpha)),
    rho^2 = (-2 log alpha + log(-2 log alpha + 1)) / t*; times sqrt(t) it is the z."""
    tuned = judge.SEQUENCE_TUNED_FOR["error_ratio"]
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuned
    width = math.sqrt(2 * (n * rho2 + 1) / (n * n * rho2) * math.log(math.sqrt(n * rho2 + 1) / alpha))
    assert judge.sequence_z(n, alpha, tuned) == pytest.approx(width * math.sqrt(n), rel=1e-12)


def test_sequence_z_stays_near_its_narrowest_over_the_range_the_docs_state():
    for n, within in ((200, 1.21), (500, 1.10), (2000, 1.0 + 1e-12), (100000, 1.11), (2000000, 1.21)):
        assert judge.sequence_z(n, 0.01, 2000.0) <= within * judge.sequence_z(n, 0.01, tuned_for=n)


def test_sequence_z_without_samples_is_infinite():
    assert judge.sequence_z(0.0, 0.01, 100.0) == math.inf
    assert judge.effective_samples(0.0, 100.0) == 0.0
    assert judge.effective_samples(100.0, 300.0) == pytest.approx(75.0)


def test_the_sequence_covers_a_random_walk_at_every_step():
    """2,000 Gaussian random walks of 3,000 steps, looked at after every step: the share that ever
    leaves the sequence's boundary is at most alpha; a fixed-sample z at every step leaves it
    far more often (what looking again and again does to a plain interval)."""
    rng = np.random.default_rng(5)
    alpha, walks, steps = 0.05, 2000, 3000
    n = np.arange(1, steps + 1, dtype=float)
    bound = np.array([judge.sequence_z(k, alpha, 100.0) for k in n]) * np.sqrt(n)
    fixed = judge.z_one_sided(alpha / 2) * np.sqrt(n)
    left_sequence = left_fixed = 0
    for _ in range(4):
        sums = rng.standard_normal((walks // 4, steps)).cumsum(axis=1)
        left_sequence += int((np.abs(sums) >= bound).any(axis=1).sum())
        left_fixed += int((np.abs(sums) >= fixed).any(axis=1).sum())
    assert left_sequence / walks <= alpha
    assert left_fixed / walks > 4 * alpha


# -- A/A: the false-fail rate over a step's looks --------------------------------------------------


def _aa_fail_rate(monkeypatch, fixed_z: bool, trials: int = 200, looks: int = 12) -> float:
    """Candidate and baseline with the same 5xx probability, looked at `looks` times over one
    step with the data so far, at the boundary (tolerance 0, no floor): the rate over the step
    shows what the repeated looks cost."""
    settings = Settings(tolerance=0.0, confidence=0.8, min_difference=0.0)
    if fixed_z:
        monkeypatch.setattr(judge, "sequence_z", lambda _n, alpha, _tuned: judge.z_one_sided(alpha / 2))
    rng = np.random.default_rng(2024)
    per_look = (400, 4000)
    failed = 0
    for _ in range(trials):
        errors = rng.binomial(per_look, 0.02, size=(looks, 2)).cumsum(axis=0)
        for k in range(looks):
            n_c, n_b = per_look[0] * (k + 1), per_look[1] * (k + 1)
            got = judge.judge_error_ratio(float(errors[k, 0]), n_c, float(errors[k, 1]), n_b, settings)
            if got.verdict is Verdict.FAIL:
                failed += 1
                break
    return failed / trials


def test_aa_false_fail_rate_over_all_looks_stays_below_alpha(monkeypatch):
    assert _aa_fail_rate(monkeypatch, fixed_z=False) <= 0.1  # one side of a 0.8 sequence


def test_aa_with_a_fixed_sample_z_fails_more_often_than_alpha(monkeypatch):
    # The same looks each with a fixed-sample interval: what the sequence is there to prevent.
    assert _aa_fail_rate(monkeypatch, fixed_z=True) > 0.15


def _aa_latency_fail_rate(trials: int = 60, looks: int = 4) -> float:
    """The same for latency: both sides log-normal (median 40 ms), coarse buckets, tolerance 0."""
    bounds = (10.0, 25.0, 50.0, 100.0, 250.0, math.inf)
    edges = np.array((0.0, *bounds))
    settings = Settings(tolerance=0.0, confidence=0.8)
    rng = np.random.default_rng(11)
    failed = 0
    for _ in range(trials):
        candidate, baseline = np.zeros(len(bounds)), np.zeros(len(bounds))
        for _look in range(looks):
            candidate += np.histogram(rng.lognormal(math.log(40), 0.8, 200), edges)[0]
            baseline += np.histogram(rng.lognormal(math.log(40), 0.8, 2000), edges)[0]
            got = judge.judge_latency(bounds, candidate.tolist(), baseline.tolist(), settings)
            if got.verdict is Verdict.FAIL:
                failed += 1
                break
    return failed / trials


def test_aa_latency_false_fail_rate_over_all_looks_stays_below_alpha():
    assert _aa_latency_fail_rate() <= 0.1


def test_a_look_with_one_request_a_side_judges_without_error():
    got = judge.judge_error_ratio(1.0, 1.0, 0.0, 1.0, Settings())
    assert got.verdict is Verdict.INCONCLUSIVE
    assert got.extra["z"] > 10
