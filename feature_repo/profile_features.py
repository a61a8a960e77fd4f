"""User profile features: the PROFILE_FEATURES table.

The table is the one definition. The FeatureView (feature_repo/feature_views.py), the
recommender's JSON contract and the serving read path (TTL and fallback) are all derived from
it. It imports no Feast, so what reads only the table (prompts, the benchmark) starts quickly.
"""

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from feature_repo.categories import TIP_CATEGORIES

Dtype = Literal["int64", "float64"]


class ProfileFeature(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    dtype: Dtype
    ttl: timedelta
    source: str
    fallback: int | float
    # The values the feature can take: what a request may supply and a row may hold.
    minimum: int | float
    maximum: int | float
    description: str

    @model_validator(mode="after")
    def _fallback_matches_dtype(self) -> "ProfileFeature":
        if self.dtype == "int64" and not isinstance(self.fallback, int):
            raise ValueError(f"{self.name}: int64 feature needs an int fallback")
        if not self.minimum <= self.fallback <= self.maximum:
            raise ValueError(f"{self.name}: fallback outside [{self.minimum}, {self.maximum}]")
        return self


_TASKS = "events: task_created, task_completed"
_TIPS = "events: impression, feedback"
_DAILY = timedelta(days=2)  # a daily job may miss one run before the value is stale
_MONTHLY = timedelta(days=7)
_ACCEPT_PRIOR = 0.2
_RATE = {"minimum": 0.0, "maximum": 1.0}
_COUNT = {"minimum": 0, "maximum": 1_000_000}
# A century: as long as the plausible range of timestamps (feature_repo/bounds.py).
_DAYS = {"minimum": 0, "maximum": 36_525}

PROFILE_FEATURES: tuple[ProfileFeature, ...] = (
    ProfileFeature(
        name="completion_rate_7d",
        dtype="float64",
        ttl=_DAILY,
        source=_TASKS,
        fallback=0.5,
        **_RATE,
        description="Tasks completed in 7 days / tasks open at any time in those 7 days.",
    ),
    ProfileFeature(
        name="tasks_completed_7d",
        dtype="int64",
        ttl=_DAILY,
        source=_TASKS,
        fallback=0,
        **_COUNT,
        description="Tasks completed in the 7 days before as-of.",
    ),
    ProfileFeature(
        name="open_tasks_eod",
        dtype="int64",
        ttl=_DAILY,
        source=_TASKS,
        fallback=0,
        **_COUNT,
        description="Open tasks at as-of (end of the UTC day).",
    ),
    ProfileFeature(
        name="overdue_tasks_eod",
        dtype="int64",
        ttl=_DAILY,
        source=_TASKS,
        fallback=0,
        **_COUNT,
        description="Open tasks past their due time at as-of.",
    ),
    ProfileFeature(
        name="preferred_hour",
        dtype="int64",
        ttl=timedelta(days=14),
        source=f"{_TASKS}; {_TIPS}",
        fallback=-1,
        minimum=-1,
        maximum=23,
        description=(
            "Circular mean local hour (0-23) of completions and accepted tips in 28 days; "
            "-1 unknown."
        ),
    ),
    ProfileFeature(
        name="tips_shown_7d",
        dtype="int64",
        ttl=_DAILY,
        source=_TIPS,
        fallback=0,
        **_COUNT,
        description="Tip impressions in the 7 days before as-of.",
    ),
    ProfileFeature(
        name="tip_accept_rate_28d",
        dtype="float64",
        ttl=_MONTHLY,
        source=_TIPS,
        fallback=_ACCEPT_PRIOR,
        **_RATE,
        description="Accepted tips / tips shown in 28 days.",
    ),
    ProfileFeature(
        name="streak_days",
        dtype="int64",
        ttl=_DAILY,
        source=f"{_TASKS}; {_TIPS}",
        fallback=0,
        **_DAYS,
        description="Consecutive active UTC days ending on the as-of day.",
    ),
    ProfileFeature(
        name="active_days_28d",
        dtype="int64",
        ttl=_MONTHLY,
        source=f"{_TASKS}; {_TIPS}",
        fallback=0,
        minimum=0,
        maximum=28,
        description="Days with a task change or an explicit tip reaction in 28 days.",
    ),
    ProfileFeature(
        name="tenure_days",
        dtype="int64",
        ttl=_DAILY,
        source=f"{_TASKS}; {_TIPS}",
        fallback=0,
        **_DAYS,
        description="Whole days since the user's first event.",
    ),
    *(
        ProfileFeature(
            name=f"accept_rate_{category}_28d",
            dtype="float64",
            ttl=_MONTHLY,
            source=_TIPS,
            fallback=_ACCEPT_PRIOR,
            **_RATE,
            description=(
                f"Accepted / shown for '{category}' tips in 28 days, smoothed toward the "
                "overall rate by 5 pseudo-impressions."
            ),
        )
        for category in TIP_CATEGORIES
    ),
)

# Carried beside the features so that both read paths can apply each feature's own TTL:
# Feast's FeatureView has one TTL, and its online read ignores even that.
PROFILE_AS_OF = "profile_as_of"
