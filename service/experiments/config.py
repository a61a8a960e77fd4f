"""Prompt experiments for /generate, as defined in experiments.yaml beside this module.

Each experiment names its arms (released prompt versions), its control, its policy and the
policy's parameters, and its guardrails; the file is validated whole when the service starts,
so a bad experiment fails start-up, not requests. Assignment is service/experiments/
assignment.py.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from service.api.prompt_versions import ReleasedPromptVersion
from service.events.models import Decision

DEFAULT_CONFIG = Path(__file__).with_name("experiments.yaml")
BUCKETS = 10_000
# The policy and LLM-outcome vocabularies are the Decision event's own (service/events/models.py).
Policy = Decision.model_fields["policy"].annotation
Outcome = Decision.model_fields["outcome"].annotation
STICKY_POLICIES = frozenset({"fixed", "weighted"})
Arm = ReleasedPromptVersion
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class Guardrails(BaseModel):
    """Limits per arm, the one definition: an experiment's `guardrails` in experiments.yaml.

    flows/experiments/stats.py `evaluate_guardrails` judges every arm against them on its
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
        """The experiments at `path` (default: service/experiments/experiments.yaml)."""
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
