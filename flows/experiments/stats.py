"""Statistics for prompt experiments: accept-rate intervals, an always-valid sequential test
of each arm against control, a sample-ratio-mismatch check, and guardrails.

Every function is pure: arrays or the reward frame of flows/experiments/rewards.py in, frozen models
out. The guardrail limits are service/experiments/config.py `Guardrails`, the model experiments.yaml
holds; `evaluate_guardrails` is the one rule both the report and the bandit_update flow apply.

The sequential test is the mixture SPRT (mSPRT) of Johari, Pekelis & Walsh (2017, "Always
valid inference: continuous monitoring of A/B tests") for theta = p_arm - p_control with the
normal approximation theta_hat ~ N(theta, V), V = p_c(1-p_c)/n_c + p_a(1-p_a)/n_a. Mixing the
likelihood ratio over theta ~ N(0, tau^2) gives, after every observation,

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 * theta_hat^2 / (2 V (V + tau^2)))

which is a martingale under H0, so by Ville's inequality P(ever Lambda >= 1/alpha) <= alpha:
the p-value min(1, 1 / max Lambda so far) stays valid however often anyone looks. Inverting
the test at every step gives intervals theta_hat +- half that hold simultaneously; their
running intersection matches the p-value (0 is outside it exactly when p <= alpha).

tau is the scale of differences the test is tuned to find fastest; any tau keeps the
guarantee. TAU = 0.05 because acceptance sits near 20-30% and a prompt is worth shipping at a
few points of accept rate (the simulator's v3-few-shot is +0.3 on the logit, about +6 points):
a much smaller tau would wait for tiny effects, a much larger one would pay for huge ones.
"""

from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy.stats import chi2 as chi2_distribution
from scipy.stats import norm

from service.experiments.config import Guardrails

TAU = 0.05
ALPHA = 0.05
# The normal approximation needs some observations per arm before it is trusted at all.
BURN_IN = 30
SRM_THRESHOLD = 0.001
# Chi-square's approximation wants an expected count of at least 5 in every bucket.
SRM_MIN_EXPECTED = 5.0
# Arms a policy version could choose but never did: the propensity mass nobody logged.
UNLOGGED = "(unlogged arms)"
_PROPENSITY_TOLERANCE = 1e-6


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class Interval(_Result):
    low: float
    high: float


class SequentialTest(_Result):
    """mSPRT of an arm against control; difference = arm - control accept rate."""

    n_control: int
    n_arm: int
    difference: float | None
    p_value: float  # always valid: the running minimum over every observation
    ci: Interval  # always valid for the difference
    significant: bool  # p_value <= alpha
    alpha: float
    tau: float


class SrmResult(_Result):
    """Observed decisions per arm against what the logged propensities expected."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float | None
    p_value: float | None
    mismatch: bool  # p_value < threshold
    detail: str


class GuardrailResult(_Result):
    """One arm over the rows it was judged on (see guardrail_window)."""

    arm: str
    decisions: int
    dismiss_rate: float | None  # over settled impressions
    llm_error_rate: float  # over decisions: the share with outcome "error"
    p95_latency_ms: float
    breaches: list[str]
    action: Literal["continue", "pause"]  # never "pause" for the control arm


def _z(level: float) -> float:
    return float(norm.ppf(0.5 + level / 2))


def wilson_bounds(
    successes: np.ndarray, n: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise Wilson score interval; (0, 1) where n is 0."""
    s = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z2 = _z(level) ** 2
    safe = np.where(n > 0, n, 1.0)
    p = s / safe
    denom = 1 + z2 / safe
    center = (p + z2 / (2 * safe)) / denom
    half = np.sqrt(z2) * np.sqrt(p * (1 - p) / safe + z2 / (4 * safe**2)) / denom
    low = np.where(n > 0, np.clip(center - half, 0.0, 1.0), 0.0)
    high = np.where(n > 0, np.clip(center + half, 0.0, 1.0), 1.0)
    return low, high


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Interval:
    low, high = wilson_bounds(np.array([successes]), np.array([n]), level)
    return Interval(low=float(low[0]), high=float(high[0]))


def mixture_log_lr(theta_hat: np.ndarray, var: np.ndarray, tau: float) -> np.ndarray:
    """log Lambda = log of N(theta_hat; theta, V) averaged over theta ~ N(0, tau^2),
    divided by N(theta_hat; 0, V)."""
    tau2 = tau**2
    return 0.5 * np.log(var / (var + tau2)) + tau2 * theta_hat**2 / (2 * var * (var + tau2))


def _msprt_steps(
    in_arm: np.ndarray, reward: np.ndarray, tau: float, burn_in: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """After each observation: theta_hat, V, log Lambda, and whether the step is past burn-in."""
    in_arm = np.asarray(in_arm, dtype=bool)
    reward = np.asarray(reward, dtype=float)
    n_a = np.cumsum(in_arm)
    n_c = np.cumsum(~in_arm)
    s_a = np.cumsum(reward * in_arm)
    s_c = np.cumsum(reward * ~in_arm)
    ready = (n_a >= burn_in) & (n_c >= burn_in)
    n_a_safe = np.maximum(n_a, 1)
    n_c_safe = np.maximum(n_c, 1)
    theta = s_a / n_a_safe - s_c / n_c_safe
    # Variance from proportions pulled half an observation towards 1/2: an arm that has only
    # seen zeros so far must not get zero variance (and an infinite likelihood ratio).
    p_a = (s_a + 0.5) / (n_a_safe + 1)
    p_c = (s_c + 0.5) / (n_c_safe + 1)
    var = p_a * (1 - p_a) / n_a_safe + p_c * (1 - p_c) / n_c_safe
    return theta, var, np.where(ready, mixture_log_lr(theta, var, tau), 0.0), ready


def msprt_p_values(
    in_arm: np.ndarray, reward: np.ndarray, *, tau: float = TAU, burn_in: int = BURN_IN
) -> np.ndarray:
    """The always-valid p-value after each observation (non-increasing).

    `in_arm` marks the arm's observations (the rest are control's), `reward` is 0/1, both in
    the order the rewards became known.
    """
    _, _, log_lr, _ = _msprt_steps(in_arm, reward, tau, burn_in)
    return np.minimum(1.0, np.exp(-np.maximum.accumulate(log_lr)))


def msprt(
    in_arm: np.ndarray,
    reward: np.ndarray,
    *,
    tau: float = TAU,
    alpha: float = ALPHA,
    burn_in: int = BURN_IN,
) -> SequentialTest:
    """The arm against control after every observation so far (see msprt_p_values)."""
    in_arm = np.asarray(in_arm, dtype=bool)
    theta, var, log_lr, ready = _msprt_steps(in_arm, reward, tau, burn_in)
    n_arm = int(in_arm.sum())
    n_control = len(in_arm) - n_arm
    p_value = float(min(1.0, np.exp(-log_lr.max()))) if len(log_lr) else 1.0
    low, high = -1.0, 1.0  # before burn-in nothing is excluded
    if ready.any():
        t, v = theta[ready], var[ready]
        tau2 = tau**2
        half = np.sqrt(v * (v + tau2) / tau2 * (-2 * np.log(alpha) + np.log((v + tau2) / v)))
        low = max(low, float((t - half).max()))
        high = min(high, float((t + half).min()))
        if low > high:
            # Every difference was excluded at some step: the data contradict the model (at
            # level alpha). The latest interval is still valid on its own; report that.
            low, high = max(-1.0, float(t[-1] - half[-1])), min(1.0, float(t[-1] + half[-1]))
    return SequentialTest(
        n_control=n_control,
        n_arm=n_arm,
        difference=float(theta[-1]) if n_arm and n_control else None,
        p_value=p_value,
        ci=Interval(low=low, high=high),
        significant=p_value <= alpha,
        alpha=alpha,
        tau=tau,
    )


def _unchecked(
    observed: dict[str, int], detail: str, expected: dict[str, float] | None = None
) -> SrmResult:
    """An SRM result with no test: `detail` says why."""
    return SrmResult(
        observed=observed,
        expected=expected or {},
        chi2=None,
        p_value=None,
        mismatch=False,
        detail=detail,
    )


def sample_ratio_mismatch(decisions: pd.DataFrame, threshold: float = SRM_THRESHOLD) -> SrmResult:
    """Chi-square goodness of fit of decisions per arm against the logged propensities.

    Within one `policy_version` the policy's state is fixed, so each arm's logged propensity
    is its probability on every decision of that version (for a weighted A/B, its weight), and
    the expected count of arm a is the sum over versions of n_version * p_version(a). Mass a
    version gave to arms it never chose forms one more bucket, observed 0. Errors count: the
    assignment happened before the LLM call failed.
    """
    observed = {str(a): int(n) for a, n in decisions["arm"].value_counts().sort_index().items()}
    if decisions.empty:
        return _unchecked({}, "no data")
    spread = decisions.groupby(["policy_version", "arm"])["propensity"].agg(["min", "max"])
    varying = spread[spread["max"] - spread["min"] > _PROPENSITY_TOLERANCE]
    if not varying.empty:
        version, arm = varying.index[0]
        return _unchecked(
            observed,
            f"not checked: {arm}'s propensity varies within policy version {version} "
            "(a contextual policy); expected counts are unknown",
        )
    weights = spread["min"].unstack(fill_value=0.0)
    per_version = decisions["policy_version"].value_counts().reindex(weights.index)
    unlogged = 1.0 - weights.sum(axis=1)
    if (unlogged < -_PROPENSITY_TOLERANCE).any():
        version = unlogged.idxmin()
        return _unchecked(
            observed,
            f"not checked: propensities of policy version {version} sum to "
            f"{1 - unlogged[version]:.6f} > 1",
        )
    expected = {str(a): float(e) for a, e in weights.mul(per_version, axis=0).sum().items()}
    missing = float((unlogged.clip(lower=0.0) * per_version).sum())
    if missing > _PROPENSITY_TOLERANCE * len(decisions):
        observed = {**observed, UNLOGGED: 0}
        expected = {**expected, UNLOGGED: missing}
    if len(expected) < 2:
        return _unchecked(observed, "one arm only: nothing to compare", expected)
    if min(expected.values()) < SRM_MIN_EXPECTED:
        return SrmResult(
            observed=observed,
            expected=expected,
            chi2=None,
            p_value=None,
            mismatch=False,
            detail=f"not checked yet: an arm expects fewer than {SRM_MIN_EXPECTED:g} decisions",
        )
    o = np.array([observed[a] for a in expected], dtype=float)
    e = np.array(list(expected.values()))
    chi2 = float(((o - e) ** 2 / e).sum())
    p_value = float(chi2_distribution.sf(chi2, df=len(e) - 1))
    mismatch = p_value < threshold
    return SrmResult(
        observed=observed,
        expected=expected,
        chi2=chi2,
        p_value=p_value,
        mismatch=mismatch,
        detail=(
            f"sample ratio mismatch (p={p_value:.2g} < {threshold:g}): assignment or logging "
            "is broken; do not trust the comparison"
            if mismatch
            else f"ok (p={p_value:.2g})"
        ),
    )


def guardrail_window(frame: pd.DataFrame, limits: Guardrails, as_of: datetime) -> pd.DataFrame:
    """The decisions of `frame` (flows.experiments.rewards output) made in the last
    `lookback_days`."""
    start = as_of - timedelta(days=limits.lookback_days)
    return frame[frame["timestamp"] >= start]


def evaluate_guardrails(
    frame: pd.DataFrame, limits: Guardrails, control: str | None
) -> dict[str, GuardrailResult]:
    """Each arm's dismiss rate, LLM error rate and p95 latency against `limits`.

    `frame` is flows.experiments.rewards output for one experiment, usually its guardrail_window. A
    rate is judged only once its own denominator (settled impressions for dismissals, decisions
    otherwise) reaches min_decisions, so a handful of early dismissals cannot pause an arm. Control
    is never paused: it is what the app serves without the experiment, so a breach there is
    reported, not acted on, and some arm always stays live.
    """
    results = {}
    for arm, rows in frame.groupby("arm", sort=True):
        decisions = len(rows)
        settled = rows[rows["settled"]]
        judged = decisions >= limits.min_decisions
        dismiss_rate = float(settled["dismissed"].mean()) if len(settled) else None
        error_rate = float((rows["outcome"] == "error").mean())
        p95 = float(np.percentile(rows["latency_ms"], 95))
        breaches = []
        if (
            limits.max_dismiss_rate is not None
            and dismiss_rate is not None
            and len(settled) >= limits.min_decisions
            and dismiss_rate > limits.max_dismiss_rate
        ):
            breaches.append(f"dismiss rate {dismiss_rate:.3f} > {limits.max_dismiss_rate:g}")
        max_error_rate = limits.max_llm_error_rate
        if judged and max_error_rate is not None and error_rate > max_error_rate:
            breaches.append(f"LLM error rate {error_rate:.3f} > {max_error_rate:g}")
        max_p95 = limits.max_p95_latency_ms
        if judged and max_p95 is not None and p95 > max_p95:
            breaches.append(f"p95 latency {p95:.0f} ms > {max_p95:g} ms")
        results[str(arm)] = GuardrailResult(
            arm=str(arm),
            decisions=decisions,
            dismiss_rate=dismiss_rate,
            llm_error_rate=error_rate,
            p95_latency_ms=p95,
            breaches=breaches,
            action="pause" if breaches and arm != control else "continue",
        )
    return results
