"""The event log's vocabulary: what the app, the simulator and the consumers record.

Every event carries a unique `event_id` (published as `Nats-Msg-Id` on JetStream) so that a
redelivered or re-simulated event is counted once.
"""

from datetime import date, timedelta
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from feature_repo.bounds import Due, Timestamp, Timezone, resolve_due
from service.api.prompt_versions import ReleasedPromptVersion
from service.api.request import MAX_TITLE_CHARS, Id, RequestContext

Reaction = Literal["accepted", "dismissed", "ignored"]
# A shown tip nobody reacted to counts as ignored once this window has closed.
ATTRIBUTION_WINDOW = timedelta(minutes=60)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id
    user_id: Id
    timestamp: Timestamp


class TaskCreated(_Event):
    type: Literal["task_created"] = "task_created"
    task_id: Id
    title: str = Field(max_length=MAX_TITLE_CHARS)
    project: str = Field(max_length=100)
    priority: Literal[1, 2, 3, 4]
    due: Due | None = Field(
        default=None, description="A time, or an all-day date: it ends in `timezone`."
    )
    timezone: Timezone

    @model_validator(mode="after")
    def _all_day_due_in_timezone(self) -> Self:
        if type(self.due) is not date:
            return self
        return self.model_copy(update={"due": resolve_due(self.due, self.timezone)})


class TaskCompleted(_Event):
    type: Literal["task_completed"] = "task_completed"
    task_id: Id
    timezone: Timezone


class Impression(_Event):
    """A tip shown to a user, with the full request context the scorer saw."""

    type: Literal["impression"] = "impression"
    tip_id: Id
    category: Annotated[str, Field(min_length=1, max_length=64)]
    prompt_version: ReleasedPromptVersion
    context: RequestContext
    # Known only in the simulated world: the true acceptance probability (oracle AUC).
    oracle_p_accept: float | None = Field(default=None, ge=0.0, le=1.0)


class Feedback(_Event):
    """A user's reaction to a shown tip; also the body of POST /feedback."""

    type: Literal["feedback"] = "feedback"
    tip_id: Id
    reaction: Reaction
    prompt_version: ReleasedPromptVersion


class Decision(_Event):
    """An experiment's choice for one /generate request, with the probability it had.

    `tip_id` is the id of the tip the request wrote (its request_id): feedback on that tip is
    the decision's reward. `propensity` is the probability the policy gave the chosen arm,
    which off-policy evaluation divides by; `policy_version` pins the state it was drawn from.
    """

    type: Literal["decision"] = "decision"
    request_id: Id
    tip_id: Id
    experiment: Id
    arm: ReleasedPromptVersion
    propensity: float = Field(gt=0.0, le=1.0)
    policy: Literal["fixed", "weighted", "epsilon_greedy", "thompson"]
    policy_version: Id
    # How the LLM call went, for the guardrails: "fallback" = a fallback model wrote the
    # tip, "error" = none did (the request failed and nobody saw a tip).
    outcome: Literal["ok", "fallback", "error"]
    latency_ms: float = Field(ge=0.0)


EVENT_MODELS: dict[str, type[_Event]] = {
    model.model_fields["type"].default: model
    for model in (TaskCreated, TaskCompleted, Impression, Feedback, Decision)
}
Event = Annotated[
    TaskCreated | TaskCompleted | Impression | Feedback | Decision, Field(discriminator="type")
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)
