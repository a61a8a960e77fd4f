"""Each user's effects on top of a population model: a pure transformation.

A population model scores an impression from what every user shares (the request, the
tasks, the cohort, the category); each user then departs from it by a base effect and one
effect per tip category, added to its logit. The effects get a Gaussian prior (mean 0, sd
`prior_sd`) and, after each UTC midnight, a Laplace posterior from the user's outcomes settled
by then (their attribution window closed), every earlier day of them: the empirical-Bayes
estimate the 28-day rates approximate. Few outcomes leave an effect near 0 with a wide
variance; many pin it down.

`fit_posterior` is the engine, vectorized over the cut-offs and over alternative offsets
(flows/simulation/posterior.py weighs candidate preferred hours with it); `user_effects`
applies it to impressions.
"""

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd
from scipy.special import expit

from feature_repo.categories import TIP_CATEGORIES

# The user's effects as inputs a learner can be given: the posterior mean of base + the
# candidate category's effect, of the base alone, and the variance of the first.
USER_EFFECTS = ("user_effect_logit", "user_base_effect", "user_effect_variance")
EFFECT_PRIOR_SD = 0.5
NEWTON_STEPS = 25
NEWTON_TOLERANCE = 1e-8


@dataclass(frozen=True)
class Posterior:
    """After each of d cut-offs, under each of k alternative offsets: `mode` (k, d, p) and
    `cov` (k, d, p, p) of the Gaussian at the posterior mode, and `weight` (d, k) of the
    alternatives (prior times Laplace evidence, normalized)."""

    mode: np.ndarray
    cov: np.ndarray
    weight: np.ndarray


def category_design(categories: np.ndarray | pd.Series) -> np.ndarray:
    """(n, 1 + len(TIP_CATEGORIES)): 1 for the base effect, and the category's indicator."""
    column = pd.Categorical(np.asarray(categories), categories=TIP_CATEGORIES).codes
    if (column < 0).any():
        raise ValueError(f"a category outside {TIP_CATEGORIES}")
    design = np.zeros((len(column), 1 + len(TIP_CATEGORIES)))
    design[:, 0] = 1.0
    design[np.arange(len(column)), 1 + column] = 1.0
    return design


def category_columns(design: np.ndarray) -> np.ndarray:
    """Each row's column of `category_design`: 1 + its category's index."""
    return design[:, 1:].argmax(axis=1) + 1


def base_plus_category(
    mode: np.ndarray, cov: np.ndarray, columns: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior mean and variance of base + the row's category effect: `mode` (..., n, p) and
    `cov` (..., n, p, p) at each row's cut-off, `columns` (n,) from `category_columns`."""
    n = np.arange(len(columns))
    mean = mode[..., n, 0] + mode[..., n, columns]
    var = cov[..., n, 0, 0] + cov[..., n, columns, columns] + 2 * cov[..., n, 0, columns]
    return mean, var


def daily_history(
    stamps: pd.Series, settle: timedelta
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One user's impressions (UTC timestamps) by UTC day: the cut-offs (each day's midnight),
    `history` (d, n), 1 where an impression had settled (`settle` after it) by a cut-off,
    and each impression's cut-off index."""
    utc = stamps.dt.tz_convert(None)
    day = utc.dt.floor("D").to_numpy()
    cutoffs = np.unique(day)
    settled = (utc + settle).to_numpy()
    history = (settled[None, :] <= cutoffs[:, None]).astype(float)
    return cutoffs, history, np.searchsorted(cutoffs, day)


def fit_posterior(
    design: np.ndarray,
    offsets: np.ndarray,
    outcomes: np.ndarray,
    history: np.ndarray,
    prior_mean: np.ndarray,
    prior_sd: float,
    offset_weights: np.ndarray | None = None,
) -> Posterior:
    """The effects' posterior in logit(p) = design @ effects + offset.

    `design` (n, p); `offsets` (k, n): k alternative offsets of each impression (k = 1 for a
    population model's logit); `outcomes` (n,) 0/1; `history` (d, n): which impressions each
    cut-off has seen; `prior_mean` (p,), each effect's prior sd `prior_sd`; `offset_weights`
    (k,): the alternatives' prior (default: equal). Newton's method from the prior mean, each
    step clipped to 1 (the first steps on a short history can overshoot)."""
    k, d, p = offsets.shape[0], history.shape[0], design.shape[1]
    weights = np.full(k, 1 / k) if offset_weights is None else np.asarray(offset_weights)
    precision = np.eye(p) / prior_sd**2
    theta = np.broadcast_to(prior_mean, (k, d, p)).copy()
    for _ in range(NEWTON_STEPS):
        prob = expit(theta @ design.T + offsets[:, None, :])  # (k, d, n)
        gradient = (history * (outcomes - prob)) @ design - (theta - prior_mean) @ precision
        curvature = history * prob * (1 - prob)
        hessian = np.einsum("kdn,ni,nj->kdij", curvature, design, design) + precision
        step = np.clip(np.linalg.solve(hessian, gradient[..., None])[..., 0], -1.0, 1.0)
        theta += step
        if np.abs(step).max() < NEWTON_TOLERANCE:
            break
    prob = np.clip(expit(theta @ design.T + offsets[:, None, :]), 1e-15, 1 - 1e-15)
    curvature = history * prob * (1 - prob)
    hessian = np.einsum("kdn,ni,nj->kdij", curvature, design, design) + precision
    loglik = (history * (outcomes * np.log(prob) + (1 - outcomes) * np.log1p(-prob))).sum(-1)
    centred = theta - prior_mean
    log_prior = -0.5 * np.einsum("kdi,ij,kdj->kd", centred, precision, centred)
    _, logdet = np.linalg.slogdet(hessian)
    # Laplace: log evidence = log lik + log prior at the mode - log det(H) / 2, up to constants
    # every alternative shares.
    evidence = loglik + log_prior - 0.5 * logdet + np.log(weights)[:, None]
    weight = np.exp(evidence - evidence.max(axis=0, keepdims=True))
    return Posterior(
        mode=theta,
        cov=np.linalg.inv(hessian),
        weight=(weight / weight.sum(axis=0, keepdims=True)).T,
    )


def user_effects(
    rows: pd.DataFrame,
    offsets: np.ndarray,
    settle: timedelta,
    prior_sd: float = EFFECT_PRIOR_SD,
) -> pd.DataFrame:
    """USER_EFFECTS of every impression in `rows` (user_id, event_timestamp, category,
    accepted), from its user's outcomes settled by the UTC midnight before it; `offsets` (n,)
    is the population model's logit of each row. Same index as `rows`."""
    offsets = pd.Series(np.asarray(offsets, dtype=float), index=rows.index)
    out = pd.DataFrame(index=rows.index, columns=list(USER_EFFECTS), dtype=float)
    for _, at in rows.groupby(rows["user_id"].astype(str)).groups.items():
        mine = rows.loc[at].sort_values("event_timestamp", kind="stable")
        design = category_design(mine["category"])
        _, history, day = daily_history(mine["event_timestamp"], settle)
        posterior = fit_posterior(
            design,
            offsets.loc[mine.index].to_numpy()[None, :],
            mine["accepted"].to_numpy(dtype=float),
            history,
            np.zeros(design.shape[1]),
            prior_sd,
        )
        mode = posterior.mode[0, day]
        mean, var = base_plus_category(mode, posterior.cov[0, day], category_columns(design))
        out.loc[mine.index, "user_effect_logit"] = mean
        out.loc[mine.index, "user_base_effect"] = mode[:, 0]
        out.loc[mine.index, "user_effect_variance"] = var
    return out
