"""Assignment in prompt experiments: which arm a /generate request gets, and its propensity.

`decide` is a pure function of the experiment, the user, the request and the bandit state
(service/experiments/bandit_state.py): the same inputs give the same arm, so any logged decision can
be replayed, and `arm_probabilities` gives the probability of every arm under the same inputs, which
is what off-policy evaluation needs.

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

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from service.events.models import Decision
from service.experiments.bandit_state import ExperimentState
from service.experiments.config import BUCKETS, STICKY_POLICIES, Experiment, Outcome, Policy

THOMPSON_DRAWS = 4000


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
