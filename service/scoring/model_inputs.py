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


def model_frame(
    profile: Mapping[str, np.ndarray],
    context: Mapping[str, np.ndarray],
    category: np.ndarray,
) -> pd.DataFrame:
    """Rows of MODEL_FEATURES; every argument holds one value per row."""
    category = np.asarray(category)
    columns: dict[str, np.ndarray] = {
        **{f.name: np.asarray(profile[f.name]) for f in PROFILE_FEATURES},
        **{f.name: np.asarray(context[f.name], dtype=np.int64) for f in CONTEXT_FEATURES},
        **candidate_features(category, profile, np.asarray(context["hour_of_day"])),
    }
    for name, value in zip(CATEGORY_COLUMNS, TIP_CATEGORIES, strict=True):
        columns[name] = (category == value).astype(np.int64)
    # One float block: a model signature has one dtype to check, and pandas builds one block
    # far faster than a column at a time (this runs on every /score request).
    matrix = np.column_stack(
        [np.asarray(columns[name], dtype=np.float64) for name in MODEL_FEATURES]
    )
    return pd.DataFrame(matrix, columns=list(MODEL_FEATURES))
