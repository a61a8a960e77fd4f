"""The scorer's input row: one assembly of its columns, shared by training and serving.

Both sides pass resolved profile values (TTL and fallbacks applied, with the cohort's counts
for a version that reads them), context features from the FeatureService's on-demand view,
and the candidate categories; this assembles the columns of the model's version
(feature_repo/scorer_versions.py) in the same order with the same dtypes.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from feature_repo.candidate_features import candidate_features
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.scorer_versions import CATEGORY_COLUMNS


def model_matrix(
    columns: Sequence[str],
    profile: Mapping[str, np.ndarray | float],
    context: Mapping[str, np.ndarray | int],
    category: np.ndarray,
) -> np.ndarray:
    """Rows of `columns` (a ScorerVersion's) as one float64 matrix, a row per category.
    Profile and context hold one value per row, or one value for all rows (a user's
    candidates in one request)."""
    category = np.asarray(category)
    values: dict[str, np.ndarray | float | int] = {
        **profile,
        **{f.name: context[f.name] for f in CONTEXT_FEATURES},
        **candidate_features(category, profile, context),
    }
    for name, value in zip(CATEGORY_COLUMNS, TIP_CATEGORIES, strict=True):
        values[name] = category == value
    # Filled column by column: one float block, a value shared by all rows written once, and
    # no pandas (this runs on every /score request).
    matrix = np.empty((len(category), len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        matrix[:, j] = values[name]
    return matrix


def model_frame(
    columns: Sequence[str],
    profile: Mapping[str, np.ndarray],
    context: Mapping[str, np.ndarray],
    category: np.ndarray,
) -> pd.DataFrame:
    """`model_matrix` with its column names, as training and scikit-learn read it."""
    return pd.DataFrame(model_matrix(columns, profile, context, category), columns=list(columns))
