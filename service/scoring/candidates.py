"""Scoring candidates for one request: merge profile sources, then the model rows.

Store values win over values the recommender sent; the recommender's fill in only where the
store had none (missing, stale, or unreadable). Where both exist and disagree, that is live
train/serve skew: reported, never silently averaged.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel

from service.scoring.model_inputs import model_matrix
from service.scoring.online_features import FeatureRead

# Beyond float noise from another language's arithmetic: a real disagreement.
SKEW_REL_TOLERANCE = 1e-4
SKEW_ABS_TOLERANCE = 1e-6


@dataclass(frozen=True)
class MergedProfile:
    values: dict[str, int | float]
    fallbacks: dict[str, str]
    skewed: tuple[str, ...]


def merge_profile(read: FeatureRead, supplied: BaseModel | None) -> MergedProfile:
    values = dict(read.profile)
    fallbacks = dict(read.fallbacks)
    skewed = []
    for name, value in (supplied.model_dump(exclude_none=True) if supplied else {}).items():
        if name in fallbacks:
            values[name] = value
            del fallbacks[name]
        elif not math.isclose(
            values[name], value, rel_tol=SKEW_REL_TOLERANCE, abs_tol=SKEW_ABS_TOLERANCE
        ):
            skewed.append(name)
    return MergedProfile(values=values, fallbacks=fallbacks, skewed=tuple(skewed))


def candidate_rows(
    columns: Sequence[str], profile: dict, context: dict, categories: Sequence[str]
) -> np.ndarray:
    """The model rows (the scorer version's `columns`) of one user's candidates in one request
    context."""
    return model_matrix(columns, profile, context, np.asarray(categories))
