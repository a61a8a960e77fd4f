"""The best any scorer could do on a simulated world from the history it holds: the
Bayes-optimal prediction of each impression given the user's earlier outcomes.

The observable ceiling (`observable_p_accept`, world.py) knows every user's true traits. No
scorer does: it has the user's history, ~20 impressions a category a month. This module
estimates the traits as well as they can be estimated from that history, with everything
else about the world known exactly, and so bounds what better features could win:

- the prior is the user's own persona (feature_repo/personas.py) with the world's spreads
  (`draw_users`, world.py): base logit and each category's receptivity the persona's plus
  N(0, TRAIT_SD), preferred hour the persona's active hour plus N(0, HOUR_SD), rounded. A
  scorer could at best learn this from other users; here it is given.
- the likelihood is `p_accept`'s own logit: base_logit + receptivity[category]
  - 0.3 * hour_gap(local hour, preferred hour) + the rest, which depends on the request and
  the prompt only. "The rest" of each impression is read off its oracle probability and the
  user's true traits, so it is exact.
- the history of an impression is every impression of the same user whose outcome was known
  at the UTC midnight before it (its attribution window closed by then), as the profile
  features are computed; all of it, not the features' 28 days.

For each candidate preferred hour the posterior of the five continuous traits is found by
Newton's method (logistic likelihood, Gaussian prior) and approximated by a Gaussian at its
mode (Laplace); the hours are weighted by prior times Laplace evidence
(feature_repo/user_effects.py `fit_posterior`, the engine of the users' effects too). The prediction
averages the prompt version out as the observable ceiling does, and the traits' posterior
uncertainty in with the probit approximation of a logistic-Gaussian integral.

Pure: frames in, frames out. Ground truth (the world's users, the oracle probabilities) in,
so it runs on simulated data only, like the other ceilings (flows/modeling/ceiling.py).
"""

import numpy as np
import pandas as pd
from scipy.special import expit, log_ndtr

from feature_repo.candidate_features import hour_gap
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.personas import PERSONAS, Persona
from feature_repo.user_effects import (
    base_plus_category,
    category_columns,
    category_design,
    daily_history,
    fit_posterior,
)
from flows.simulation.world import (
    HOUR_GAP_COEF,
    HOUR_SD,
    PROMPT_EFFECT,
    PROMPT_PROPENSITY,
    TRAIT_SD,
)
from service.events.models import ATTRIBUTION_WINDOW

# What `history_posteriors` estimates of the user, as inputs a learner can be given.
POSTERIOR_FEATURES = ("post_base_logit", "post_receptivity", "post_user_logit")
# Preferred hours whose prior is below this are not considered (a 4-sigma draw).
MIN_HOUR_PRIOR = 1e-5


def hour_prior(active_hour: float) -> tuple[np.ndarray, np.ndarray]:
    """The preferred hours a persona's user may have and their prior probabilities:
    round(active_hour + N(0, HOUR_SD)) % 24."""
    whole = np.arange(np.floor(active_hour) - 8 * HOUR_SD, np.ceil(active_hour) + 8 * HOUR_SD + 1)
    upper = log_ndtr((whole + 0.5 - active_hour) / HOUR_SD)
    lower = log_ndtr((whole - 0.5 - active_hour) / HOUR_SD)
    mass = np.exp(upper) - np.exp(lower)
    hours = whole.astype(np.int64) % 24
    prior = np.bincount(hours, weights=mass, minlength=24)
    keep = prior >= MIN_HOUR_PRIOR
    return np.flatnonzero(keep).astype(float), prior[keep] / prior[keep].sum()


def history_posteriors(rows: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """For every impression in `rows` (user_id, event_timestamp, category, prompt_version,
    oracle_p_accept, accepted), the posterior given its user's earlier outcomes in `rows`:

    - p_history: the Bayes-optimal probability of acceptance, the prompt version averaged out;
    - post_base_logit, post_receptivity (the impression's category): posterior means (of the
      Laplace approximations, weighted over the candidate hours);
    - post_user_logit: the posterior mean of the user's part of the logit at this hour,
      base_logit + receptivity[category] - HOUR_GAP_COEF * hour_gap;
    - post_preferred_hour: the most probable preferred hour.

    `users` are the world's (flows/simulate.py `read_world_users`), with their persona,
    timezone and true traits. Same index and order as `rows`.
    """
    personas = {p.name: p for p in PERSONAS}
    truth = users.set_index("user_id")
    columns = ["p_history", *POSTERIOR_FEATURES, "post_preferred_hour"]
    out = pd.DataFrame(np.nan, index=rows.index, columns=columns)
    for user_id, at in rows.groupby(rows["user_id"].astype(str)).groups.items():
        mine = rows.loc[at].sort_values("event_timestamp", kind="stable")
        user = truth.loc[user_id]
        persona = personas[user["persona"]]
        scored = _one_user(mine, user, persona)
        out.loc[scored.index, scored.columns] = scored
    return out


def _one_user(mine: pd.DataFrame, user: pd.Series, persona: Persona) -> pd.DataFrame:
    design = category_design(mine["category"])
    column = category_columns(design)
    true_theta = np.array(
        [user["base_logit"], *(user["receptivity"][c] for c in TIP_CATEGORIES)], dtype=float
    )
    # The local hour to the minute, as `p_accept` was given it.
    local = mine["event_timestamp"].dt.tz_convert(str(user["timezone"]))
    hours = (local.dt.hour + local.dt.minute / 60).to_numpy(dtype=float)
    oracle = np.clip(mine["oracle_p_accept"].to_numpy(dtype=float), 1e-15, 1 - 1e-15)
    true_gap = hour_gap(hours, float(user["preferred_hour"]))
    # The rest of the logit: the request's terms and the drawn prompt's effect.
    rest = np.log(oracle) - np.log1p(-oracle) - design @ true_theta + HOUR_GAP_COEF * true_gap
    drawn = mine["prompt_version"].map(PROMPT_EFFECT).to_numpy(dtype=float)

    candidates, hour_weights = hour_prior(persona.active_hour)
    gaps = hour_gap(hours[None, :], candidates[:, None])  # (k, n)
    _, history, day = daily_history(mine["event_timestamp"], ATTRIBUTION_WINDOW)
    prior_mean = np.array(
        [persona.base_logit, *(persona.receptivity[c] for c in TIP_CATEGORIES)], dtype=float
    )
    posterior = fit_posterior(
        design,
        rest[None, :] - HOUR_GAP_COEF * gaps,
        mine["accepted"].to_numpy(dtype=float),
        history,
        prior_mean,
        TRAIT_SD,
        hour_weights,
    )

    weight = posterior.weight[day]  # (n, k)
    mode = posterior.mode[:, day, :]  # (k, n, 5)
    mean, var = base_plus_category(mode, posterior.cov[:, day], column)  # (k, n) each
    user_logit = mean - HOUR_GAP_COEF * gaps
    shrink = 1 / np.sqrt(1 + np.pi * var / 8)
    p = np.zeros((len(candidates), len(mine)))
    for version, share in PROMPT_PROPENSITY.items():
        logit = user_logit + rest - drawn + PROMPT_EFFECT[version]
        p += share * expit(logit * shrink)
    return pd.DataFrame(
        {
            "p_history": (weight * p.T).sum(axis=1),
            "post_base_logit": (weight * mode[..., 0].T).sum(axis=1),
            "post_receptivity": (weight * mode[:, np.arange(len(mine)), column].T).sum(axis=1),
            "post_user_logit": (weight * user_logit.T).sum(axis=1),
            "post_preferred_hour": candidates[weight.argmax(axis=1)],
        },
        index=mine.index,
    )
