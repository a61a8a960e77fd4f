"""The numpy tree walk must give scikit-learn's probabilities exactly, or not be used."""

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from flows.modeling.scorer_models import CANDIDATES
from service.scoring.fast_predict import accept_probability

FEATURES = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(3)
    x = pd.DataFrame(rng.normal(size=(3000, 4)), columns=list(FEATURES))
    x.iloc[rng.random(x.shape) < 0.05] = np.nan  # missing values take their learned side
    logit = 1.5 * x["a"].fillna(0) - x["b"].fillna(1) * x["c"].fillna(0)
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-logit))).astype(int)
    return x, y


def test_boosted_trees_match_scikit_learn_bit_for_bit(data):
    x, y = data
    model = CANDIDATES["hist_gradient_boosting"]().fit(x, y)
    predict = accept_probability(model, FEATURES)
    assert predict.__name__ == "numpy_path"
    fresh = pd.DataFrame(np.random.default_rng(9).normal(size=(500, 4)) * 3, columns=list(FEATURES))
    fresh.iloc[::7, 1] = np.nan
    assert np.array_equal(predict(fresh.to_numpy()), model.predict_proba(fresh)[:, 1])


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogisticRegression(),
        CANDIDATES["hist_gradient_boosting_isotonic"],
        CANDIDATES["logistic_regression"],
    ],
)
def test_other_models_use_scikit_learn(data, make):
    x, y = data
    model = make().fit(x.fillna(0), y)
    predict = accept_probability(model, FEATURES)
    assert predict.__name__ == "sklearn_path"
    rows = x.fillna(0)
    assert np.array_equal(predict(rows.to_numpy()), model.predict_proba(rows)[:, 1])


def test_a_model_with_other_inputs_uses_scikit_learn(data):
    x, y = data
    model = HistGradientBoostingClassifier(max_iter=5).fit(x, y)
    assert accept_probability(model, ("a", "b", "c", "e")).__name__ == "sklearn_path"
