"""Prompt experiments for /generate: their definitions (experiments.yaml) and the assignment.

`decide` is a pure function of the experiment, the user, the request and the bandit state
(service/bandit_state.py): the same inputs give the same arm, so any logged decision can be
replayed, and `arm_probabilities` gives the probability of every arm under the same inputs,
which is what off-policy evaluation needs.

- `fixed` and `weighted` are sticky: a user's bucket, SHA-256("<salt>.<user_id>") mod 10000,
  falls in one arm's range of buckets, laid out in `arms` order by `weights`. The propensity is
  the arm's weight. Raising `bucket_version` hashes "<salt>.v<bucket_version>.<user_id>"
  instead, which re-randomizes every user on purpose.
- `epsilon_greedy` and `thompson` draw per request from a generator seeded by the experiment
  and the request id. Until every live arm has `min_exposures` counted decisions they draw from
  `weights`; after that, with probability K * floor (K live arms) they pick an arm uniformly,
  otherwise epsilon-greedy on the posterior means or Thompson sampling from Beta(1 + rewards,
  1 + misses). Thompson's propensity is a Monte Carlo estimate over the same posteriors, mixed
  exactly with the floor.
- A paused arm gets probability 0 and the others are renormalized. In sticky policies only the
  paused arm's users move, spread over the other arms by weight; the control is never paused.
"""

import hashlib
import random
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Self

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from service.bandit_state import ExperimentState
from service.events import Decision
from service.prompt_versions import ReleasedPromptVersion

DEFAULT_CONFIG = Path(__file__).with_name("experiments.yaml")
BUCKETS = 10_000
THOMPSON_DRAWS = 4000
# The policy and LLM-outcome vocabularies are the Decision event's own (service/events.py).
Policy = Decision.model_fields["policy"].annotation
Outcome = Decision.model_fields["outcome"].annotation
STICKY_POLICIES = frozenset({"fixed", "weighted"})


Arm = ReleasedPromptVersion
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Guardrails(BaseModel):
    """Limits per arm, the one definition: an experiment's `guardrails` in experiments.yaml.

    flows/experiment_stats.py `evaluate_guardrails` judges every arm against them on its
    decisions of the last `lookback_days`; the bandit_update flow pauses a non-control arm that
    goes over one, and `tipml experiments report` shows the same verdicts. The dismiss rate is
    judged once the arm has `min_decisions` settled impressions, the LLM error rate and the p95
    latency once it has `min_decisions` decisions: fewer say too little about an arm to pause it.

    A limit left out gets the default below, the one the shipped experiments use; `null` turns
    it off. An experiment that experiments.yaml does not define (the simulated world's
    "world-uniform") is reported against `Guardrails()`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_dismiss_rate: Probability | None = 0.5  # of settled impressions
    max_llm_error_rate: Probability | None = 0.05  # of decisions: outcome "error"
    max_p95_latency_ms: PositiveFloat | None = 6000.0
    min_decisions: PositiveInt = 100
    lookback_days: PositiveInt = 7


class Experiment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # No ":" in ids: the policy version joins id, policy and revision with it.
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    # No "." in salts, so "<salt>.<user_id>" and "<salt>.v<n>.<user_id>" stay unambiguous.
    salt: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    bucket_version: PositiveInt = 1
    arms: tuple[Arm, ...] = Field(min_length=2)
    control: str
    policy: Policy
    weights: dict[str, Probability] | None = None
    epsilon: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    floor: Probability = 0.0
    min_exposures: Annotated[int, Field(ge=0)] = 0
    guardrails: Guardrails = Guardrails()
    active: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        where = f"experiment {self.id!r}"
        if len(set(self.arms)) != len(self.arms):
            raise ValueError(f"{where}: arms must be distinct, got {list(self.arms)}")
        if self.control not in self.arms:
            raise ValueError(f"{where}: control {self.control!r} is not one of the arms")
        sticky = self.policy in STICKY_POLICIES
        if sticky and self.weights is None:
            raise ValueError(f"{where}: policy {self.policy!r} needs weights")
        if (self.policy == "epsilon_greedy") != (self.epsilon is not None):
            raise ValueError(f"{where}: epsilon is required for epsilon_greedy and only for it")
        if sticky and self.model_fields_set & {"floor", "min_exposures"}:
            raise ValueError(
                f"{where}: floor and min_exposures apply to epsilon_greedy and thompson only"
            )
        if self.policy == "thompson" and self.floor == 0:
            raise ValueError(
                f"{where}: thompson needs floor > 0, so that every logged propensity is positive "
                "and off-policy weights stay bounded"
            )
        if len(self.arms) * self.floor > 1:
            raise ValueError(f"{where}: floor {self.floor} * {len(self.arms)} arms exceeds 1")
        if self.weights is not None:
            self._check_weights(where, self.weights)
        return self

    def _check_weights(self, where: str, weights: Mapping[str, float]) -> None:
        if set(weights) != set(self.arms):
            raise ValueError(
                f"{where}: weights must name exactly the arms {list(self.arms)}, "
                f"got {list(weights)}"
            )
        off_grid = [a for a, w in weights.items() if abs(w * BUCKETS - round(w * BUCKETS)) > 1e-6]
        if off_grid:
            raise ValueError(
                f"{where}: weights of {off_grid} are not multiples of {1 / BUCKETS}: bucket "
                "ranges could not match them exactly"
            )
        if sum(round(w * BUCKETS) for w in weights.values()) != BUCKETS:
            raise ValueError(f"{where}: weights sum to {sum(weights.values())}, not 1")
        if self.policy == "fixed" and sorted(weights.values()) != [0.0] * (len(weights) - 1) + [1]:
            raise ValueError(f"{where}: fixed gives one arm weight 1 and the others 0")
        if self.policy not in STICKY_POLICIES and min(weights.values()) < max(self.floor, 1e-9):
            # Every arm must get traffic to reach min_exposures, and warm-up respects the floor.
            raise ValueError(f"{where}: every warm-up weight must be positive and >= floor")

    @property
    def initial_weights(self) -> dict[str, float]:
        return self.weights or {arm: 1 / len(self.arms) for arm in self.arms}


class UnknownExperiment(ValueError):
    """An experiment id that experiments.yaml does not define, or one that is not active."""


class ExperimentsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    experiments: tuple[Experiment, ...]

    @model_validator(mode="after")
    def _unique(self) -> Self:
        for field in ("id", "salt"):
            values = [getattr(e, field) for e in self.experiments]
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                # A shared salt would put a user in the same bucket in both experiments.
                raise ValueError(f"experiment {field}s must be unique, repeated: {repeated}")
        return self

    @classmethod
    def from_yaml(cls, path: Path | None = None) -> "ExperimentsConfig":
        """The experiments at `path` (default: service/experiments.yaml)."""
        return cls.model_validate(yaml.safe_load((path or DEFAULT_CONFIG).read_text()))

    def active(self, experiment_id: str) -> Experiment:
        """The active experiment `experiment_id`, for a request that asks for it."""
        for experiment in self.experiments:
            if experiment.id == experiment_id:
                if not experiment.active:
                    raise UnknownExperiment(f"experiment {experiment_id!r} is not active")
                return experiment
        known = ", ".join(e.id for e in self.experiments if e.active)
        raise UnknownExperiment(f"unknown experiment {experiment_id!r}; active: {known}")


class Assignment(BaseModel):
    """The arm a request gets, with what off-policy evaluation needs to reweigh it."""

    model_config = ConfigDict(frozen=True)

    experiment: str
    arm: str
    propensity: float = Field(gt=0.0, le=1.0)
    policy: Policy
    policy_version: str
    bucket: int
    probabilities: dict[str, float]


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")


def assignment_bucket(experiment: Experiment, user_id: str) -> int:
    key = experiment.salt
    if experiment.bucket_version > 1:
        key = f"{key}.v{experiment.bucket_version}"
    return _digest(f"{key}.{user_id}") % BUCKETS


def policy_version(experiment: Experiment, state: ExperimentState) -> str:
    return f"{experiment.id}:{experiment.policy}:r{state.revision}"


def live_arms(experiment: Experiment, state: ExperimentState) -> list[str]:
    """The arms that may get traffic; the control stays live even if the store says paused."""
    return [a for a in experiment.arms if a == experiment.control or not state.arm(a).paused]


def _renormalized(
    experiment: Experiment, weights: Mapping[str, float], live: Sequence[str]
) -> dict[str, float]:
    mass = sum(weights[a] for a in live)
    if mass == 0:  # the paused arms held all the weight (a fixed rollout): back to control
        return {a: float(a == experiment.control) for a in experiment.arms}
    return {a: weights[a] / mass if a in live else 0.0 for a in experiment.arms}


def _warming_up(experiment: Experiment, state: ExperimentState, live: Sequence[str]) -> bool:
    return any(state.arm(a).exposures < experiment.min_exposures for a in live)


def _greedy(state: ExperimentState, live: Sequence[str]) -> str:
    """The live arm with the best posterior mean; ties go to the earlier arm."""
    return max(live, key=lambda a: state.arm(a).mean)


@lru_cache(maxsize=256)
def _thompson_shares(version: str, posteriors: tuple[tuple[int, int], ...]) -> tuple[float, ...]:
    """How often each arm has the highest of THOMPSON_DRAWS posterior draws.

    Seeded by the policy version, so the logged propensity can be recomputed; the cache key
    holds the posteriors too, so two stores at the same revision never share an entry.
    """
    rng = np.random.default_rng(_digest(version))
    alphas, betas = zip(*posteriors, strict=True)
    draws = rng.beta(alphas, betas, size=(THOMPSON_DRAWS, len(posteriors)))
    wins = np.bincount(draws.argmax(axis=1), minlength=len(posteriors))
    return tuple(float(w) / THOMPSON_DRAWS for w in wins)


def arm_probabilities(
    experiment: Experiment, state: ExperimentState, user_id: str
) -> dict[str, float]:
    """The probability of every arm (in `arms` order) for a request of `user_id` under `state`.

    No policy here depends on the user beyond the bucket, whose distribution over users is the
    weights; `user_id` is part of the signature so that off-policy evaluation calls every
    policy, including a future contextual one, the same way.
    """
    if state.experiment != experiment.id:
        raise ValueError(f"the state of {state.experiment!r} is not {experiment.id!r}'s")
    live = live_arms(experiment, state)
    if experiment.policy in STICKY_POLICIES or _warming_up(experiment, state, live):
        return _renormalized(experiment, experiment.initial_weights, live)
    if experiment.policy == "epsilon_greedy":
        best = _greedy(state, live)
        explore = experiment.epsilon / len(live)
        base = {a: explore + (1 - experiment.epsilon) * (a == best) for a in live}
    else:
        posteriors = tuple((state.arm(a).alpha, state.arm(a).beta) for a in live)
        shares = _thompson_shares(policy_version(experiment, state), posteriors)
        base = dict(zip(live, shares, strict=True))
    uniform = len(live) * experiment.floor
    return {
        a: experiment.floor + (1 - uniform) * base[a] if a in live else 0.0 for a in experiment.arms
    }


def _pick(probabilities: Mapping[str, float], u: float) -> str:
    """The arm whose cumulative probability range holds u in [0, 1)."""
    total = 0.0
    for arm, p in probabilities.items():
        total += p
        if u < total:
            return arm
    # Rounding can leave the sum a hair under 1: the last arm with any probability takes it.
    return next(a for a, p in reversed(probabilities.items()) if p > 0)


def _sticky_arm(experiment: Experiment, bucket: int, live: Sequence[str]) -> str:
    weights = experiment.initial_weights
    low = 0
    for arm in experiment.arms:
        high = low + round(weights[arm] * BUCKETS)
        if bucket < high:
            break
        low = high
    if arm in live:
        return arm
    # Only the paused arm's users move: their place within its range spreads them over the
    # live arms by weight, and every other user keeps their arm.
    position = (bucket - low + 0.5) / (high - low)
    return _pick(_renormalized(experiment, weights, live), position)


def _drawn_arm(
    experiment: Experiment,
    state: ExperimentState,
    request_id: str,
    live: Sequence[str],
    probabilities: Mapping[str, float],
) -> str:
    rng = random.Random(_digest(f"{experiment.id}.{request_id}"))
    if _warming_up(experiment, state, live):
        return _pick(probabilities, rng.random())
    if rng.random() < len(live) * experiment.floor:
        return rng.choice(live)
    if experiment.policy == "epsilon_greedy":
        return rng.choice(live) if rng.random() < experiment.epsilon else _greedy(state, live)
    return max(live, key=lambda a: rng.betavariate(state.arm(a).alpha, state.arm(a).beta))


def decide(
    experiment: Experiment, user_id: str, request_id: str, state: ExperimentState
) -> Assignment:
    """The arm for this request: replayable from (experiment, user, request, state)."""
    live = live_arms(experiment, state)
    bucket = assignment_bucket(experiment, user_id)
    probabilities = arm_probabilities(experiment, state, user_id)
    if experiment.policy in STICKY_POLICIES:
        arm = _sticky_arm(experiment, bucket, live)
    else:
        arm = _drawn_arm(experiment, state, request_id, live, probabilities)
    return Assignment(
        experiment=experiment.id,
        arm=arm,
        propensity=probabilities[arm],
        policy=experiment.policy,
        policy_version=policy_version(experiment, state),
        bucket=bucket,
        probabilities=probabilities,
    )


def decision_event(
    assignment: Assignment,
    *,
    request_id: str,
    user_id: str,
    outcome: Outcome,
    latency_ms: float,
    timestamp: datetime | None = None,
) -> Decision:
    """The event /generate logs for an assignment; the tip it wrote has the request's id."""
    return Decision(
        event_id=f"decision-{uuid.uuid4().hex}",
        user_id=user_id,
        timestamp=timestamp or datetime.now(UTC),
        request_id=request_id,
        tip_id=request_id,
        experiment=assignment.experiment,
        arm=assignment.arm,
        propensity=assignment.propensity,
        policy=assignment.policy,
        policy_version=assignment.policy_version,
        outcome=outcome,
        latency_ms=latency_ms,
    )
