"""Cohort features: the COHORT_FEATURES table, tip counts of every user in one time zone.

A user's own tip history is thin: ~20 impressions of a category a month, three or four of them
accepted, so the per-category rates in PROFILE_FEATURES are noisy and a new user has none. The
users who share the request's IANA time zone (the one user attribute every request carries)
give a prior for them: their summed 28-day counts, shown and accepted, overall and per
category. The scorer turns them into smoothed rates (feature_repo/candidate_features.py).

The cohort key is the request's zone name as sent, no alias folding: training reads the same
key from the logged request, so both paths agree, and a zone with no rows falls back to zero
counts (no evidence), like a user with no profile. Like PROFILE_FEATURES this table is the one
definition: the FeatureView, the batch transformation and the serving read derive from it.
"""

from datetime import timedelta

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.profile_features import ProfileFeature

COHORT_KEY = "cohort"
COHORT_AS_OF = "cohort_as_of"
COHORT_WINDOW_DAYS = 28
# Summed over a zone's users: the largest zone of a large population stays far below this.
_COUNT = {"minimum": 0, "maximum": 10**12, "fallback": 0}
_SOURCE = "events: impression, feedback, summed by the impression's time zone"
_TTL = timedelta(days=7)  # a 28-day sum moves little in a week of missed runs


def _counts(suffix: str, what: str) -> tuple[ProfileFeature, ...]:
    return tuple(
        ProfileFeature(
            name=f"cohort_{kind}{suffix}_28d",
            dtype="int64",
            ttl=_TTL,
            source=_SOURCE,
            description=description,
            **_COUNT,
        )
        for kind, description in (
            ("shown", f"{what} shown to users in the request's time zone in 28 days."),
            ("accepted", f"{what} those users accepted in 28 days."),
        )
    )


COHORT_FEATURES: tuple[ProfileFeature, ...] = (
    *_counts("", "Tips"),
    *(f for c in TIP_CATEGORIES for f in _counts(f"_{c}", f"'{c}' tips")),
)
