"""The HTTP contract with the recommender: request and response bodies of the service."""

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.contract import CONTRACT_PATH
from service.api.request import Id

MAX_CANDIDATES = 100

Category = Annotated[str, Field(min_length=1, max_length=64)]


class Candidate(BaseModel):
    """A tip the recommender may show; fields beyond these are the recommender's own."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tip_id: Id
    category: Category


def _profile_features_model() -> type[BaseModel]:
    """Optional profile values from the recommender, typed and bounded by the exported contract.

    Strict: a boolean is not a count and a string is not a rate, and no value is NaN or
    infinite. The same bounds hold for /score and /generate, which share this model.
    """
    contract = json.loads(CONTRACT_PATH.read_text())
    python_types = {"int64": int, "float64": float}
    fields = {
        f["name"]: (
            python_types[f["dtype"]] | None,
            Field(
                default=None,
                ge=f["minimum"],
                le=f["maximum"],
                strict=True,
                allow_inf_nan=False,
                description=f["description"],
            ),
        )
        for f in contract["features"]
    }
    return create_model(
        "ProfileFeatures", __config__=ConfigDict(extra="forbid", frozen=True), **fields
    )


ProfileFeatures = _profile_features_model()


DependencyFallbacks = Annotated[
    dict[str, str],
    Field(
        description=(
            "Dependency -> why its fallback answered: online_store, bandit_state, event_log, "
            "jetstream (the decision was spooled), event_spool (and not spooled either) "
            "(timeout, unavailable, circuit_open, error); llm (primary_failed)."
        )
    ),
]
_DEGRADED_DOC = "True when a dependency failed and its fallback answered: see dependency_fallbacks."


class ModelInfo(BaseModel):
    name: str
    version: str


class ScoredCandidate(BaseModel):
    tip_id: str
    category: str
    score: float = Field(description="Probability that the user accepts this tip if shown now.")


class ScoreResponse(BaseModel):
    request_id: str
    model: ModelInfo
    feature_service: str
    candidates: list[ScoredCandidate] = Field(description="Best first.")
    fallbacks: dict[str, str] = Field(
        description="Feature -> why its fallback was used: missing, stale, store_unavailable."
    )
    dependency_fallbacks: DependencyFallbacks
    degraded: bool = Field(description=_DEGRADED_DOC)


class GenerateResponse(BaseModel):
    request_id: str
    tip_id: str = Field(description="The written tip's id: name it in /feedback.")
    text: str
    prompt_version: str
    model: str = Field(description="The LLM deployment that wrote the text.")
    latency_ms: float
    cost_usd: float | None = Field(description="From the deployment's per-token prices.")
    format_ok: bool
    overlong: bool
    fallback_used: bool = Field(description="True when a fallback model wrote the text.")
    fallbacks: dict[str, str] = Field(description="Features that fell back, as in /score.")
    dependency_fallbacks: DependencyFallbacks
    degraded: bool = Field(description=_DEGRADED_DOC)
    experiment: str | None = Field(default=None, description="When the request named one.")
    arm: str | None = Field(default=None, description="The experiment's prompt version.")
    propensity: float | None = Field(
        default=None, description="The probability the experiment's policy gave this arm."
    )


class FeedbackResponse(BaseModel):
    event_id: str
    status: Literal["appended", "duplicate"]


CandidateList = Annotated[list[Candidate], Field(min_length=1, max_length=MAX_CANDIDATES)]
TipCategory = Literal[TIP_CATEGORIES]
