"""Off-policy evaluation: what a candidate policy would earn, from decisions logged by another.

Each logged decision t chose arm a_t with the logged propensity mu_t and earned r_t (flows/
rewards.py; only settled decisions that showed a tip). A candidate gives the same request
probabilities pi_t(a); w_t = pi_t(a_t) / mu_t. Then, with n decisions:

- IPS:   mean(w_t r_t), unbiased, high variance when weights are large;
- SNIPS: sum(w_t r_t) / sum(w_t), slightly biased, bounded by the rewards, and well defined
         for a degenerate candidate (all mass on one arm): it is then that arm's mean reward;
- DR:    mean(sum_a pi_t(a) q(a) + w_t (r_t - q(a_t))) with q(a) the arm's mean reward,
         cross-fitted on two folds so that no decision's own reward is in its prediction.

Intervals are normal (CLT) on the per-decision terms; SNIPS's standard error comes from the
delta method for a ratio of means. The candidate is a fixed arm -> probability mapping or a
callable giving that mapping per decision row, so a contextual bandit plugs in unchanged.
"""

import math
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from scipy.stats import norm

from feature_repo.bounds import UtcDatetime
from flows.experiments.rewards import decision_rewards, experiment_rows
from service.api.prompt_versions import PromptVersionName
from service.api.request import Id
from service.events.lake import open_lake
from service.settings import Settings

LEVEL = 0.95
SUM_TOLERANCE = 1e-6
TargetPolicy = Mapping[str, float] | Callable[[dict[str, Any]], Mapping[str, float]]


def check_probabilities(probabilities: Mapping[str, float]) -> Mapping[str, float]:
    """A distribution over arms: every probability >= 0 and the sum 1 within SUM_TOLERANCE."""
    negative = sorted(arm for arm, p in probabilities.items() if not p >= 0)
    if negative:
        raise ValueError(f"negative or missing probabilities for {', '.join(negative)}")
    total = math.fsum(probabilities.values())
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ValueError(f"probabilities sum to {total:.6g}, not 1")
    return probabilities


Probabilities = Annotated[
    dict[PromptVersionName, Annotated[float, Field(ge=0.0)]], AfterValidator(check_probabilities)
]


class OpeParams(BaseModel):
    """A fixed candidate to evaluate on one experiment's log (the CLI's arguments)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: Id
    policy: Probabilities
    as_of: UtcDatetime | None = None
    since: date | None = Field(default=None, description="Read decisions from this UTC day.")


class UnknownArms(ValueError):
    """The candidate names arms the experiment never logged: most likely a typo."""

    def __init__(self, experiment: str, arms: list[str], known: list[str]) -> None:
        self.arms = arms
        self.known = known
        super().__init__(
            f"{', '.join(arms)} not arms of experiment {experiment!r}; its arms: {', '.join(known)}"
        )


class UnsupportedArms(ValueError):
    """The candidate puts mass on arms no logged decision chose: the log cannot see them."""

    def __init__(self, arms: list[str], logged: list[str]) -> None:
        self.arms = arms
        self.logged = logged
        super().__init__(
            f"no settled decision chose {', '.join(arms)}; arms with settled decisions: "
            f"{', '.join(logged)}"
        )


class Estimate(BaseModel):
    model_config = ConfigDict(frozen=True)

    value: float
    low: float
    high: float
    se: float


class OpeResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    n: int  # settled decisions that showed a tip
    ips: Estimate
    snips: Estimate
    dr: Estimate
    logged: Estimate  # the logging policy's own observed mean reward, for reference
    effective_sample_size: float  # (sum w)^2 / sum w^2: how many decisions the estimate is worth
    max_weight: float
    level: float


class OpeReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    experiment: str
    as_of: datetime
    target: dict[str, float] | None  # None for a per-decision (callable) candidate
    pending: int  # shown tips still inside the attribution window: not counted
    errors: int  # decisions with no tip: not counted
    result: OpeResult

    def summary(self) -> str:
        r = self.result
        target = (
            ", ".join(f"{arm}={p:g}" for arm, p in self.target.items())
            if self.target is not None
            else "a per-decision policy"
        )
        lines = [
            f"{self.experiment} as of {self.as_of:%Y-%m-%d %H:%M %Z}: {target}",
            f"  {r.n} settled decisions ({self.pending} pending, {self.errors} errors not "
            f"counted); {r.level:.0%} intervals",
        ]
        for name, e in (("IPS", r.ips), ("SNIPS", r.snips), ("DR", r.dr)):
            lines.append(f"  {name:<6} {e.value:.4f} [{e.low:.4f}, {e.high:.4f}]")
        lines += [
            f"  logged {r.logged.value:.4f} [{r.logged.low:.4f}, {r.logged.high:.4f}]"
            "  (the logging policy's own observed value)",
            f"  effective sample size {r.effective_sample_size:.0f} of {r.n}; "
            f"max importance weight {r.max_weight:.2f}",
        ]
        return "\n".join(lines)


def _estimate(value: float, se: float, z: float) -> Estimate:
    return Estimate(value=value, low=value - z * se, high=value + z * se, se=se)


def _mean_estimate(terms: np.ndarray, z: float) -> Estimate:
    se = float(terms.std(ddof=1) / np.sqrt(len(terms))) if len(terms) > 1 else math.inf
    return _estimate(float(terms.mean()), se, z)


def _target_matrix(rows: pd.DataFrame, target: TargetPolicy) -> tuple[list[str], np.ndarray]:
    """The candidate's probabilities, one row per decision, one column per arm."""
    if isinstance(target, Mapping):
        check_probabilities(target)
        arms = sorted(target)
        return arms, np.tile([float(target[a]) for a in arms], (len(rows), 1))
    per_row = []
    for record in rows.to_dict("records"):
        probabilities = dict(target(record))
        try:
            check_probabilities(probabilities)
        except ValueError as exc:
            raise ValueError(f"target policy on decision {record['event_id']}: {exc}") from exc
        per_row.append(probabilities)
    arms = sorted({a for p in per_row for a in p})
    return arms, np.array([[float(p.get(a, 0.0)) for a in arms] for p in per_row])


def _cross_fitted_arm_means(
    arm_index: np.ndarray, reward: np.ndarray, n_arms: int, seed: int
) -> np.ndarray:
    """q[t, a]: arm a's mean reward on the fold t is not in (that fold's mean if a is absent)."""
    n = len(reward)
    fold = np.random.default_rng(seed).permutation(np.arange(n) % 2)
    q = np.zeros((n, n_arms))
    for k in (0, 1):
        other = fold != k
        fallback = float(reward[other].mean()) if other.any() else 0.0
        counts = np.bincount(arm_index[other], minlength=n_arms)
        sums = np.bincount(arm_index[other], weights=reward[other], minlength=n_arms)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), fallback)
        q[fold == k] = means
    return q


def off_policy_estimates(
    rows: pd.DataFrame, target: TargetPolicy, *, level: float = LEVEL, seed: int = 0
) -> OpeResult:
    """IPS, SNIPS and DR estimates of `target`'s mean reward from logged `rows`.

    `rows` are settled decisions that showed a tip (columns arm, propensity, reward, and
    whatever a callable target reads). `seed` fixes DR's fold split.
    """
    if rows.empty:
        raise ValueError("no settled decisions to evaluate on")
    if rows["reward"].isna().any():
        raise ValueError("rows must be settled: some have no reward")
    reward = rows["reward"].to_numpy(dtype=float)
    propensity = rows["propensity"].to_numpy(dtype=float)
    logged_arms = rows["arm"].astype(str).to_numpy()

    target_arms, pi = _target_matrix(rows, target)
    seen = set(logged_arms)
    mass = dict(zip(target_arms, pi.max(axis=0), strict=True))
    if unsupported := [a for a in target_arms if mass[a] > 0 and a not in seen]:
        raise UnsupportedArms(unsupported, sorted(seen))
    arms = sorted(seen | set(target_arms))
    column = {a: i for i, a in enumerate(arms)}
    pi_full = np.zeros((len(rows), len(arms)))
    pi_full[:, [column[a] for a in target_arms]] = pi
    arm_index = np.array([column[a] for a in logged_arms])
    weight = pi_full[np.arange(len(rows)), arm_index] / propensity
    if weight.sum() <= 0:
        raise ValueError("the target gives probability 0 to every logged decision's arm")

    z = float(norm.ppf(0.5 + level / 2))
    ips = _mean_estimate(weight * reward, z)
    snips_value = float((weight * reward).sum() / weight.sum())
    snips_se = float(np.sqrt((weight**2 * (reward - snips_value) ** 2).sum()) / weight.sum())
    q = _cross_fitted_arm_means(arm_index, reward, len(arms), seed)
    q_logged = q[np.arange(len(rows)), arm_index]
    dr = _mean_estimate((pi_full * q).sum(axis=1) + weight * (reward - q_logged), z)
    return OpeResult(
        n=len(rows),
        ips=ips,
        snips=_estimate(snips_value, snips_se, z),
        dr=dr,
        logged=_mean_estimate(reward, z),
        effective_sample_size=float(weight.sum() ** 2 / (weight**2).sum()),
        max_weight=float(weight.max()),
        level=level,
    )


def evaluate_policy(
    settings: Settings,
    experiment: str,
    target: TargetPolicy,
    as_of: datetime | None = None,
    since: date | None = None,
    *,
    level: float = LEVEL,
) -> OpeReport:
    """Off-policy estimates for `target` on one experiment's decision log up to `as_of`, from
    UTC day `since` (default: all of the log)."""
    as_of = as_of or datetime.now(UTC)
    rows = experiment_rows(decision_rewards(open_lake(settings), as_of, since), experiment)
    if isinstance(target, Mapping):
        known = sorted(rows["arm"].unique())
        if unknown := sorted(set(target) - set(known)):
            raise UnknownArms(experiment, unknown, known)
    return OpeReport(
        experiment=experiment,
        as_of=as_of,
        target=dict(target) if isinstance(target, Mapping) else None,
        pending=int((rows["shown"] & ~rows["settled"]).sum()),
        errors=int((~rows["shown"]).sum()),
        result=off_policy_estimates(rows[rows["settled"]], target, level=level),
    )
