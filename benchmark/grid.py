"""What a collect answers: its parameters, its grid of (model, prompt version, scenario,
sample) points, each point's cell id, and which of them the ledger still lacks.

Apart from the collect phase (benchmark/collect.py), which calls models through LiteLLM and
records runs and traces in MLflow: deciding that there is nothing left to do, or how big a run
must be to detect a difference (benchmark/power.py), needs neither, so `tipml bench collect`
answers those in about a second.
"""

import hashlib
import json
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator

from benchmark.scenarios import DEFAULT_SCENARIO_SET, Scenario, ScenarioSet
from benchmark.store import BenchStore
from service.generation.prompts import PROMPTS
from service.tracking import BENCHMARK_EXPERIMENT

MAX_SAMPLES = 20


class CollectParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    models: tuple[str, ...] = Field(min_length=1, description="model names in models.yaml")
    prompts: tuple[str, ...] = Field(default=tuple(PROMPTS), min_length=1)
    scenario_set: str = DEFAULT_SCENARIO_SET
    scenarios: tuple[str, ...] = Field(default=(), description="ids in the set; empty = all")
    samples: int = Field(default=1, ge=1, le=MAX_SAMPLES, description="answers per cell")
    concurrency: int = Field(default=4, ge=1, le=32, description="calls in flight per model")
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    allow_unknown_size: bool = False
    benchmark: str = Field(default=BENCHMARK_EXPERIMENT, pattern=r"^[A-Za-z0-9][\w.-]{0,99}$")

    @field_validator("prompts")
    @classmethod
    def _known_prompts(cls, prompts: tuple[str, ...]) -> tuple[str, ...]:
        if unknown := sorted(set(prompts) - set(PROMPTS)):
            raise ValueError(f"unknown prompt version(s) {unknown}; known: {', '.join(PROMPTS)}")
        return prompts

    @field_validator("models", "prompts", "scenarios")
    @classmethod
    def _no_repeats(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(names)) != len(names):
            raise ValueError("each name may appear once")
        return names


class GridPoint(BaseModel):
    """One (model, prompt version, scenario, sample) of the grid: a cell before it is answered."""

    model_config = ConfigDict(frozen=True)

    model: str
    prompt_version: str
    scenario: Scenario
    sample: int

    def label(self) -> str:
        return f"{self.model}|{self.prompt_version}|{self.scenario.id}#{self.sample}"


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cell_id(benchmark: str, set_hash: str, point: GridPoint) -> str:
    return digest(
        benchmark, set_hash, point.model, point.prompt_version, point.scenario.id, point.sample
    )


def grid_points(
    params: CollectParams, scenarios: Sequence[Scenario], model: str | None = None
) -> list[GridPoint]:
    """The points of `model` (of every model when None), model-major as collect answers them."""
    return [
        GridPoint(model=name, prompt_version=version, scenario=scenario, sample=sample)
        for name in ([model] if model else params.models)
        for version in params.prompts
        for scenario in scenarios
        for sample in range(params.samples)
    ]


def left_to_collect(
    params: CollectParams, scenario_set: ScenarioSet, store: BenchStore
) -> list[GridPoint]:
    """The grid's points whose cell the ledger does not hold yet."""
    done = store.cell_ids()
    return [
        point
        for point in grid_points(params, scenario_set.select(list(params.scenarios)))
        if cell_id(params.benchmark, scenario_set.content_hash, point) not in done
    ]
