"""Per-request prediction without per-tree Python overhead.

scikit-learn's HistGradientBoostingClassifier predicts tree by tree, each through its own
Python call and OpenMP region, after validating the DataFrame: ~2.5 ms for 20 candidates,
most of /score. A fitted ensemble is only arrays, so here every tree walks every row at once
in numpy, level by level, and the leaves are summed in tree order as scikit-learn sums them.
The result is checked against scikit-learn's own predict_proba when the model is loaded; any
model this does not cover, or any disagreement, falls back to scikit-learn.
"""

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.special import expit
from sklearn.ensemble import HistGradientBoostingClassifier

log = logging.getLogger(__name__)

# P(accept) for model rows: a float matrix whose columns are the model's inputs, in order.
AcceptProbability = Callable[[np.ndarray], np.ndarray]
CHECK_ROWS = 2_000


class TreeEnsemble:
    """The trees of a binary HistGradientBoostingClassifier on numeric features, as arrays."""

    def __init__(self, model: HistGradientBoostingClassifier) -> None:
        if model.n_trees_per_iteration_ != 1:
            raise ValueError("only binary classifiers are supported")
        trees = [predictors[0].nodes for predictors in model._predictors]
        if any(tree["is_categorical"].any() for tree in trees):
            raise ValueError("categorical splits are not supported")
        sizes = [len(tree) for tree in trees]
        offsets = np.cumsum([0, *sizes[:-1]])
        nodes = np.concatenate(trees)
        shift = np.repeat(offsets, sizes)
        leaf = nodes["is_leaf"].astype(bool)
        ids = np.arange(len(nodes))
        # A leaf is its own child on both sides: `depth` steps end every walk on its leaf,
        # however early it got there, with no test for leaves along the way.
        left = np.where(leaf, ids, nodes["left"].astype(np.intp) + shift)
        right = np.where(leaf, ids, nodes["right"].astype(np.intp) + shift)
        self.children = np.column_stack([left, right]).ravel()  # node n: 2n left, 2n+1 right
        self.roots = offsets
        self.feature = nodes["feature_idx"].astype(np.intp)
        self.threshold = nodes["num_threshold"]
        self.missing_right = ~nodes["missing_go_to_left"].astype(bool)
        self.value = nodes["value"]
        self.depth = int(nodes["depth"].max())
        self.baseline = float(model._baseline_prediction.ravel()[0])

    def accept_probability(self, x: np.ndarray) -> np.ndarray:
        """As scikit-learn walks a tree: a missing value goes the side the split learned for
        it, else left when at most the threshold; here every row walks every tree at once."""
        x = np.ascontiguousarray(x, dtype=np.float64)
        cells = x.ravel()
        row_start = (np.arange(len(x)) * x.shape[1])[:, None]
        node = np.tile(self.roots, (len(x), 1))
        any_missing = bool(np.isnan(cells).any())  # served rows never are: one test per call
        for _ in range(self.depth):
            value = cells[row_start + self.feature[node]]
            go_right = value > self.threshold[node]  # False for NaN
            if any_missing:
                go_right |= np.isnan(value) & self.missing_right[node]
            node = self.children[2 * node + go_right]
        # Baseline, then each tree in order: scikit-learn's sums, and a cumulative sum adds
        # in that sequence (a plain sum would pair terms up and round differently).
        terms = np.column_stack([np.full(len(x), self.baseline), self.value[node]])
        return expit(np.cumsum(terms, axis=1)[:, -1])


def _probe_rows(model: HistGradientBoostingClassifier, rows: int) -> np.ndarray:
    """Rows that reach every side of every threshold, with missing values among them."""
    rng = np.random.default_rng(0)
    edges = [
        np.concatenate([[-1.0], thresholds, [thresholds[-1] + 1.0 if len(thresholds) else 1.0]])
        for thresholds in model._bin_mapper.bin_thresholds_
    ]
    x = np.column_stack([rng.choice(e, rows) + rng.normal(0, 1e-3, rows) for e in edges])
    x[rng.random(x.shape) < 0.02] = np.nan
    return x


def accept_probability(model: object, features: tuple[str, ...]) -> AcceptProbability:
    """P(accept) for rows of `features`: numpy trees when exact, else scikit-learn's."""

    def sklearn_path(rows: np.ndarray) -> np.ndarray:
        return model.predict_proba(pd.DataFrame(rows, columns=list(features)))[:, 1]

    if not isinstance(model, HistGradientBoostingClassifier):
        return sklearn_path
    if tuple(getattr(model, "feature_names_in_", ())) != features:
        log.warning("model inputs differ from the service's feature order; using scikit-learn")
        return sklearn_path
    try:
        ensemble = TreeEnsemble(model)
    except ValueError as exc:
        log.info("scikit-learn prediction: %s", exc)
        return sklearn_path
    probe = _probe_rows(model, CHECK_ROWS)
    expected = model.predict_proba(pd.DataFrame(probe, columns=list(features)))[:, 1]
    if not np.allclose(ensemble.accept_probability(probe), expected, rtol=1e-12, atol=0):
        log.warning("numpy trees disagree with scikit-learn on probe rows; using scikit-learn")
        return sklearn_path

    def numpy_path(rows: np.ndarray) -> np.ndarray:
        return ensemble.accept_probability(rows)

    return numpy_path
