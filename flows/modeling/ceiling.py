"""How high the scorer could reach on a simulated world: two ceilings beside the oracle.

On the same validation rows as the scorer (flows/modeling/evaluation.py):

- oracle AUC: the simulator's true probability. It knows the prompt version, which is drawn
  after the tip is scored, so no scorer can reach it.
- observable ceiling AUC: the true probability with the prompt version averaged out
  (`observable_p_accept`, flows/simulation/world.py, which says what is and is not averaged
  out): the ranking of a scorer that knows every user's true traits and every request.
- ceiling model AUC: the scorer's own learner, fitted on the same training rows, given the
  users' true traits in place of the features' estimates of them (`ceiling_inputs`). Its gap
  to the scorer is what better estimates of the traits could win; its gap to the observable
  ceiling is what the learner and the rest of the inputs leave.
- history bound AUC: the Bayes-optimal probability given each user's earlier outcomes in the
  training and validation rows and the world's exact structure
  (flows/simulation/posterior.py). The observable ceiling knows the users' traits; a scorer
  has their history, which reveals them only in part. No scorer can beat this bound on these
  rows, so AUC / bound says how much of the gap any scorer could still close.

Each needs the simulator's truth: the observable ceiling the oracle probability logged with
each impression, the ceiling model and the bound the world's users too (flows/simulate.py
writes them). Without it, that ceiling is None.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from feature_repo.candidate_features import candidate_features
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.personas import PERSONAS
from feature_repo.profile_features import PROFILE_FEATURES
from flows.modeling.training_set import TrainingSet
from flows.simulation.posterior import history_posteriors
from flows.simulation.world import observable_p_accept

# Inputs the ceiling model has beside the scorer's: the user's true base acceptance logit and
# true receptivity to the candidate's category (what the accept-rate features estimate).
TRUE_TRAITS = ("true_base_logit", "true_receptivity")


def ceiling_model_inputs(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The ceiling model's inputs: the scorer's `columns` and TRUE_TRAITS."""
    return (*columns, *TRUE_TRAITS)


def oracle_p(rows: pd.DataFrame) -> np.ndarray | None:
    """The simulator's true probability of each row, or None unless every row carries one."""
    oracle = rows["oracle_p_accept"]
    return oracle.to_numpy(dtype=float) if oracle.notna().all() else None


def observable_ceiling(rows: pd.DataFrame) -> np.ndarray | None:
    """The observable ceiling's probability of each row, or None without the oracle's."""
    oracle = oracle_p(rows)
    if oracle is None:
        return None
    return observable_p_accept(oracle, rows["prompt_version"].to_numpy())


def ceiling_inputs(
    rows: pd.DataFrame, users: pd.DataFrame, columns: tuple[str, ...]
) -> pd.DataFrame | None:
    """`ceiling_model_inputs(columns)` of `rows` (model rows with their user_id and category):
    the scorer's inputs with preferred_hour, and every candidate feature computed from it,
    from the user's true preferred hour, and TRUE_TRAITS. `users` are the world's
    (flows/simulate.py `read_world_users`); None when a row's user is not among them."""
    traits = users.set_index("user_id")
    at = traits.index.get_indexer(rows["user_id"].astype(str))
    category = rows["category"].astype(str).to_numpy()
    column = pd.Categorical(category, categories=TIP_CATEGORIES).codes
    # A user the world does not hold, or a category it never draws: no truth to give.
    if (at < 0).any() or (column < 0).any():
        return None
    receptivity = np.array([[r[c] for c in TIP_CATEGORIES] for r in traits["receptivity"]])
    preferred = traits["preferred_hour"].to_numpy(dtype=np.int64)[at]
    profile = {f.name: rows[f.name].to_numpy() for f in PROFILE_FEATURES}
    context = {f.name: rows[f.name].to_numpy() for f in CONTEXT_FEATURES}
    # The rows' profile with the true hour: only what reads the preferred hour changes (the
    # cohort's rates are not recomputed: the rows do not carry the cohort's counts).
    hours = candidate_features(category, {**profile, "preferred_hour": preferred}, context)
    out = rows[list(columns)].copy()
    out["preferred_hour"] = preferred.astype(np.float64)
    for name in set(hours) & set(columns):
        out[name] = hours[name].astype(np.float64)
    out["true_base_logit"] = traits["base_logit"].to_numpy(dtype=np.float64)[at]
    out["true_receptivity"] = receptivity[at, column]
    return out[list(ceiling_model_inputs(columns))]


@dataclass(frozen=True)
class CeilingModel:
    p_accept: np.ndarray  # on the validation rows, in their order
    fit_seconds: float


def fit_ceiling_model(
    make: Callable[[], BaseEstimator], data: TrainingSet, users: pd.DataFrame | None
) -> CeilingModel | None:
    """The learner `make` builds, fitted on the training rows' ceiling inputs and scored on
    the validation rows'; None without the world's users."""
    if users is None:
        return None
    x_train = ceiling_inputs(data.train, users, data.columns)
    x_valid = ceiling_inputs(data.valid, users, data.columns)
    if x_train is None or x_valid is None:
        return None
    model = make()
    started = time.perf_counter()
    model.fit(x_train, data.y_train)
    seconds = time.perf_counter() - started
    return CeilingModel(p_accept=model.predict_proba(x_valid)[:, 1], fit_seconds=seconds)


def history_bound(data: TrainingSet, users: pd.DataFrame | None) -> np.ndarray | None:
    """The history bound's probability of each validation row, from the users' outcomes in
    the training and validation rows before it; None without the world's truth of every row."""
    if users is None:
        return None
    rows = pd.concat([data.train, data.valid], ignore_index=True)
    # A user, a persona or a category the world does not hold: no truth to bound with.
    known = (
        rows["user_id"].astype(str).isin(users["user_id"].astype(str)).all()
        and users["persona"].isin([p.name for p in PERSONAS]).all()
        and rows["category"].isin(TIP_CATEGORIES).all()
    )
    if not known or oracle_p(rows) is None:
        return None
    return history_posteriors(rows, users)["p_history"].to_numpy()[len(data.train) :]
