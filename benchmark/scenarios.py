"""Benchmark scenarios: fixed users at fixed moments, as versioned data files.

A scenario is what /generate would be called with (the request context) plus the profile the online
store would have returned for that user. Its prompt context is built by the service's own code
(context features by the FeatureService's on-demand function, TTL and fallbacks by
feature_repo/freshness.py, the facts by service/generation/prompt_blocks.py), so the benchmark's
prompts are the prompts production renders. A set's content hash is recorded with every run, so two
runs that name the same set id but saw different contexts cannot be mixed up.
"""

import hashlib
import json
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.context_features import CONTEXT_FEATURES, request_context_features
from feature_repo.freshness import resolve_profiles
from feature_repo.profile_features import PROFILE_FEATURES
from service.api.request import RequestContext
from service.generation.prompt_blocks import PromptContext, build_prompt_context
from service.scoring.online_features import FeatureRead

SCENARIO_DIR = Path(__file__).with_name("scenarios")
DEFAULT_SCENARIO_SET = "tip-scenarios-v1"
_PROFILE_NAMES = frozenset(f.name for f in PROFILE_FEATURES)
ScenarioId = str


class Scenario(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: ScenarioId = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    persona: str = Field(min_length=1)
    slot: str = Field(min_length=1, description="usual or off hours for this persona")
    profile: dict[str, float | int | None] = Field(
        description="every profile feature; null where the store has no value (a fallback)"
    )
    context: RequestContext
    category: str | None = Field(default=None, description="the tip category asked for")

    @model_validator(mode="after")
    def _complete_profile(self) -> "Scenario":
        if missing := sorted(_PROFILE_NAMES - self.profile.keys()):
            raise ValueError(f"{self.id}: profile lacks {', '.join(missing)}")
        if unknown := sorted(self.profile.keys() - _PROFILE_NAMES):
            raise ValueError(f"{self.id}: profile has unknown features {', '.join(unknown)}")
        if self.category is not None and self.category not in TIP_CATEGORIES:
            raise ValueError(f"{self.id}: unknown category {self.category!r}")
        return self

    def feature_read(self) -> FeatureRead:
        """What the online read would give for this request: resolved profile and context."""
        now = self.context.timestamp
        raw = {name: [self.profile[name]] for name in _PROFILE_NAMES}
        values, reasons = resolve_profiles(raw, as_of=[now], now=[now])
        request = self.context.feast_request_data()
        local = request_context_features({name: [value] for name, value in request.items()})
        return FeatureRead(
            profile={name: column[0].item() for name, column in values.items()},
            context={f.name: int(local[f.name][0]) for f in CONTEXT_FEATURES},
            fallbacks={name: str(r[0]) for name, r in reasons.items() if r[0]},
            as_of=now,
        )

    def prompt_context(self) -> PromptContext:
        return build_prompt_context(self.feature_read(), self.context, self.category)


class ScenarioSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,63}$")
    description: str
    scenarios: tuple[Scenario, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> "ScenarioSet":
        ids = [s.id for s in self.scenarios]
        if duplicated := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"duplicate scenario ids: {', '.join(duplicated)}")
        return self

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the set's canonical JSON: any edit to any scenario changes it."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def select(self, ids: list[str] | None) -> tuple[Scenario, ...]:
        """The named scenarios in the set's order, or all of them; unknown ids are an error."""
        if not ids:
            return self.scenarios
        known = {s.id for s in self.scenarios}
        if unknown := sorted(set(ids) - known):
            raise ValueError(
                f"unknown scenario(s) {', '.join(unknown)} in set {self.id}; "
                f"known: {', '.join(sorted(known))}"
            )
        return tuple(s for s in self.scenarios if s.id in ids)


def scenario_sets() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in SCENARIO_DIR.glob("*.json")))


def load_scenario_set(set_id: str = DEFAULT_SCENARIO_SET) -> ScenarioSet:
    path = SCENARIO_DIR / f"{set_id}.json"
    if not path.is_file():
        raise ValueError(f"unknown scenario set {set_id!r}; known: {', '.join(scenario_sets())}")
    loaded = ScenarioSet.model_validate_json(path.read_text())
    if loaded.id != set_id:
        raise ValueError(f"{path.name} declares id {loaded.id!r}; the file name must match")
    return loaded
