"""The scorer's input row: one definition of its columns, shared by training and serving.

Both sides pass resolved profile values (TTL and fallbacks applied), context features from
the FeatureService's on-demand view, and the candidate categories; this assembles the same
columns in the same order with the same dtypes.
"""

from collections.abc import Mapping

import numpy as np
import pandas as pd

from feature_repo.candidate_features import CANDIDATE_FEATURES, candidate_features
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.profile_features import PROFILE_FEATURES

CATEGORY_COLUMNS = tuple(f"category_is_{c}" for c in TIP_CATEGORIES)
MODEL_FEATURES: tuple[str, ...] = (
    *(f.name for f in PROFILE_FEATURES),
    *(f.name for f in CONTEXT_FEATURES),
    *(f.name for f in CANDIDATE_FEATURES),
    *CATEGORY_COLUMNS,
)


def model_matrix(
    profile: Mapping[str, np.ndarray | float],
    context: Mapping[str, np.ndarray | int],
    category: np.ndarray,
) -> np.ndarray:
    """Rows of MODEL_FEATURES as one float64 matrix, a row per category. Profile and context
    hold one value per row, or one value for all rows (a user's candidates in one request)."""
    category = np.asarray(category)
    columns: dict[str, np.ndarray | float | int] = {
        **{f.name: profile[f.name] for f in PROFILE_FEATURES},
        **{f.name: context[f.name] for f in CONTEXT_FEATURES},
        **candidate_features(category, profile, np.asarray(context["hour_of_day"])),
    }
    for name, value in zip(CATEGORY_COLUMNS, TIP_CATEGORIES, strict=True):
        columns[name] = category == value
    # Filled column by column: one float block, a value shared by all rows written once, and
    # no pandas (this runs on every /score request).
    matrix = np.empty((len(category), len(MODEL_FEATURES)), dtype=np.float64)
    for j, name in enumerate(MODEL_FEATURES):
        matrix[:, j] = columns[name]
    return matrix


def model_frame(
    profile: Mapping[str, np.ndarray],
    context: Mapping[str, np.ndarray],
    category: np.ndarray,
) -> pd.DataFrame:
    """`model_matrix` with its column names, as training and scikit-learn read it."""
    return pd.DataFrame(model_matrix(profile, context, category), columns=list(MODEL_FEATURES))
