"""Candidate scorers: a logistic-regression baseline and gradient boosting, plain and with
isotonic calibration, each fitted on the training rows; the one with the lowest validation log
loss is chosen.

Both plain models minimise log loss and are usually calibrated already; isotonic calibration
(fit by cross-validation on the training rows) is a candidate, not a given, because on thin
data its steps cost ranking quality. Whichever wins must still pass the calibration gate
(expected calibration error, flows/modeling/gates.py) to be promoted.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CALIBRATION_FOLDS = 3


def _logistic_regression() -> BaseEstimator:
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))


def _gradient_boosting() -> BaseEstimator:
    # Small trees, no early stopping: on simulated worlds of a few hundred users deeper trees
    # overfit the thin per-user history. 60 trees at rate 0.1 score as well as 200 at 0.03 and
    # cost a third of the prediction time, which /score pays on every request.
    return HistGradientBoostingClassifier(
        learning_rate=0.1,
        max_iter=60,
        max_leaf_nodes=7,
        min_samples_leaf=80,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=0,
    )


def _isotonic(make: Callable[[], BaseEstimator]) -> Callable[[], BaseEstimator]:
    return lambda: CalibratedClassifierCV(make(), method="isotonic", cv=CALIBRATION_FOLDS)


CANDIDATES: dict[str, Callable[[], BaseEstimator]] = {
    "logistic_regression": _logistic_regression,
    "hist_gradient_boosting": _gradient_boosting,
    "hist_gradient_boosting_isotonic": _isotonic(_gradient_boosting),
}


class Fitted(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    model: BaseEstimator
    validation_log_loss: float
    fit_seconds: float
    params: dict[str, str]


@dataclass(frozen=True)
class Candidates:
    fitted: list[Fitted]

    @property
    def chosen(self) -> Fitted:
        return min(self.fitted, key=lambda f: f.validation_log_loss)

    @property
    def fit_seconds(self) -> float:
        return sum(f.fit_seconds for f in self.fitted)

    @property
    def validation_log_losses(self) -> dict[str, float]:
        return {f.name: f.validation_log_loss for f in self.fitted}


def fit_candidates(
    x_train: pd.DataFrame, y_train: np.ndarray, x_valid: pd.DataFrame, y_valid: np.ndarray
) -> Candidates:
    fitted = []
    for name, make in CANDIDATES.items():
        model = make()
        started = time.perf_counter()
        model.fit(x_train, y_train)
        seconds = time.perf_counter() - started
        p = model.predict_proba(x_valid)[:, 1]
        fitted.append(
            Fitted(
                name=name,
                model=model,
                validation_log_loss=float(log_loss(y_valid, p, labels=[0, 1])),
                fit_seconds=seconds,
                params={
                    k: str(v)
                    for k, v in model.get_params(deep=True).items()
                    if isinstance(v, int | float | str | bool | None)
                },
            )
        )
    return Candidates(fitted=fitted)
