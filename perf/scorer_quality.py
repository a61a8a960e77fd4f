"""Benchmark: which model choices lift the scorer toward the observable ceiling, and which of the
users' traits the features estimate worst, over three simulated worlds.

Measurement only: nothing here changes what `tipml train` does.

For each world seed (--seeds, default 42 43 44; --users 500, --days 35: the default world's
size, as `tipml demo` builds it) a home in the scratch directory gets the world (`simulate`,
ending END, so runs compare), its features (`features` as of AS_OF, two hours into END's day:
every impression's one-hour attribution window has closed) and the training set, built as
`tipml train` builds it: the subflow `training-set-shards` (flows/training_shards.py, with
TrainParams' defaults, on the settings' task runner), then `split_training_set` (the 7 whole UTC
days before AS_OF's day validate, the days before them train). The builds run in a process of
their own (`--build`), under a temporary Prefect server; each seed's rows and the world's users
are cached as Parquet in the scratch directory (--scratch, default $TMPDIR/tipml-scorer-quality)
and reused by any later run with the same world flags (delete them after changing a feature).
The homes themselves go once the rows are cached, unless --keep.

On each seed's split every row below is fitted on the training days and scored on the
validation days (the same rows `tipml train` validates on), and compared in the same run.
The rows are tip_scorer_v2's (feature_repo/scorer_versions.py), which hold v1's columns:

  tip_scorer_v1     the baseline: what `tipml train` chose before v2, every one of CANDIDATES
                    (flows/modeling/scorer_models.py) fitted on v1's columns, the lowest
                    validation log loss.
  variants          each KEEP only if it beats the baseline on both validation log loss
                    (lower) and AUC (higher) on every seed, else DROP:
    tuned GBM       HistGradientBoosting on v1's columns over a grid (GRIDS, --grid: learning
                    rate, leaves, minimum leaf size, L2) with early stopping: each setting is
                    fitted on the training days but the last INNER_DAYS and scored on those
                    after every tree; the setting and tree count with the lowest log loss there
                    are refitted on every training day. The validation days choose nothing.
    monotonic GBM   the baseline's GBM (CANDIDATES' hist_gradient_boosting, its settings) with
                    the MONOTONIC signs, where p_accept implies one.
    LR + crosses    logistic regression on v1 plus CROSS_FEATURES (each category times the
                    request's task counts, the hour gap and the affinity: the true logit's
                    shape); and the same with the accept rates on the logit scale and whether
                    each count is non-zero, also crossed.
    GBM + crosses   the GBM on v1 plus CROSS_FEATURES.
    GBM + cohort    the GBM on v1 plus COHORT_RATES (the request zone's smoothed rates).
    tip_scorer_v2   what `tipml train` chooses now: every candidate on v2's columns (v1, the
                    crosses and the cohort rates).
    user effects    the GBM on v2 plus each user's effects over a population model
                    (feature_repo/user_effects.py): the GBM on v2's shared columns (POPULATION)
                    gives each row an offset, cross-fitted over FOLDS folds of users; the
                    user's base and per-category effects on top of it, their Laplace posterior
                    from the user's outcomes before the row's day, are three more inputs. A
                    candidate for v3, not yet a feature.
  probes            not deployable: the GBM on v2's columns (the probes' own baseline), then
                    given one of the user's true traits (the world's users,
                    flows/modeling/ceiling.py): the true base_logit beside the rates that
                    estimate it; the true receptivity to the candidate's category beside them;
                    the true preferred hour in place of its estimate (with everything computed
                    from it); all three, the ceiling model's inputs. What a probe gains over
                    its baseline is what a better estimate of that trait could still win.
                    Last, the GBM on v2 given the Bayes posterior's estimates of the traits
                    (flows/simulation/posterior.py): what the best estimates history allows
                    could still win.
  bound             the Bayes-optimal probability of each validation row given the user's
                    history and the world's exact structure (flows/simulation/posterior.py):
                    what no scorer can beat on these rows. Whether the goal is reachable at all
                    is read off it.

Printed: the load average first; per seed the rows, the observable ceiling, oracle and
baseline; a table per row of validation log loss, AUC, AUC / observable ceiling (that seed's,
on the same rows, flows/modeling/ceiling.py) and ECE (flows/modeling/evaluation.py), as the
mean and the worst seed (min AUC, max log loss and ECE), the mean difference from the
baseline, the seeds won on both and KEEP/DROP; then each seed's differences; the tuned GBM's
choices; the verdict; each seed's AUC over the observable ceiling and over the bound; whether
the goal is reachable at all. Every comparison is between rows of the same run: the machine is
shared and noisy, and only the fit seconds depend on it.

    .venv/bin/python -m perf.scorer_quality [--seeds 42 43 44] [--users 500] [--days 35]
                                            [--scratch DIR] [--keep] [--grid default|quick|wide]
                                            [--skip-tuned]
"""

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from feature_repo.candidate_features import COHORT_RATES, CROSS_FEATURES
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.scorer_versions import CATEGORY_COLUMNS, TIP_SCORER_V1, TIP_SCORER_V2
from feature_repo.user_effects import user_effects
from flows.modeling.ceiling import (
    ceiling_inputs,
    ceiling_model_inputs,
    observable_ceiling,
    oracle_p,
)
from flows.modeling.evaluation import Metrics, evaluate
from flows.modeling.scorer_models import CANDIDATES, fit_candidates
from flows.modeling.training_set import TrainingSet, split_training_set, validation_start
from flows.simulation.posterior import POSTERIOR_FEATURES, history_posteriors
from flows.training import TrainParams
from service.events.models import ATTRIBUTION_WINDOW

REPO = Path(__file__).resolve().parents[1]
END = date(2026, 11, 20)  # the first UTC day after each world, as SimulateParams.end
# Training and features as of two hours into END: every impression's attribution window (one
# hour) has closed, and the split's 7 validation days are the world's last 7.
AS_OF = datetime(END.year, END.month, END.day, 2, tzinfo=UTC)
GOAL_TO_CEILING = 0.98  # issue 16: AUC / observable ceiling
GBM = "hist_gradient_boosting"  # the baseline GBM's settings: CANDIDATES[GBM]

# --- (a) the tuned GBM ----------------------------------------------------------------------

INNER_DAYS = 7  # the last training days, held out to choose the setting and the tree count
MAX_TREES = 600
PATIENCE = 20  # trees without a better held-out log loss before a fit stops
# Each fit stops early, so a setting costs its trees to the best held-out loss plus PATIENCE.
# "default" is sized for the default world's ~30k training rows (~1 min a seed on 2 quiet
# cores); "quick" for a 5,000-user world (10x the rows; not measured yet); "wide" to check a
# choice at an edge of the default grid (~4 min a seed).
GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "default": {
        "learning_rate": (0.05, 0.1),
        "max_leaf_nodes": (4, 7, 15, 31),
        "min_samples_leaf": (80, 200, 500, 1000),
        "l2_regularization": (1.0, 10.0, 30.0),
    },
    "quick": {
        "learning_rate": (0.1,),
        "max_leaf_nodes": (4, 7, 15, 31),
        "min_samples_leaf": (100, 300, 1000),
        "l2_regularization": (1.0, 10.0),
    },
    "wide": {
        "learning_rate": (0.03, 0.05, 0.1),
        "max_leaf_nodes": (3, 4, 7, 15, 31),
        "min_samples_leaf": (40, 80, 200, 500, 1000),
        "l2_regularization": (0.0, 1.0, 10.0, 30.0),
    },
}


# --- (b) monotonic constraints: the sign p_accept (flows/simulation/world.py) implies --------
#
# The true logit is base_logit + receptivity[category] - 0.3 * hour_gap(local hour, preferred
# hour) + prompt effect - 0.05 * tips_shown_7d + a category term in the request's task counts:
# planning +0.12 * min(open, 10), review +0.5 when open >= 6, focus +0.7 when due today > 0,
# wellbeing +0.7 when overdue >= 3 (each relative to its "else"). Holding every other input
# fixed, then:
MONOTONIC: dict[str, int] = {
    # Accept rates are noisy, increasing estimates of base_logit + receptivity: a higher rate
    # in the candidate's category, or in any category (base_logit is shared by all), means a
    # higher posterior logit. category_lift (= affinity - overall) is left free: constraining
    # it as well would contradict one of the two it is the difference of.
    "category_affinity": 1,
    "tip_accept_rate_28d": 1,
    **{f"accept_rate_{c}_28d": 1 for c in TIP_CATEGORIES},
    # -0.3 per hour from the preferred hour; the estimated gap is a noisy proxy of the true one.
    "hour_gap": -1,
    "in_preferred_window": 1,
    # -0.05 per tip shown in the 7 days before (the feature counts to the last midnight). The
    # personas agree: those shown more tips a day have the lower base logits.
    "tips_shown_7d": -1,
    # Each count raises one category's logit and leaves the others', so never lowers any.
    "open_task_count": 1,
    "overdue_task_count": 1,
    "due_today_count": 1,
}

# --- (c), (d) interaction terms: the true logit's category x request terms --------------------

COUNTS = ("open_task_count", "overdue_task_count", "due_today_count")
RATES = (
    "category_affinity",
    "tip_accept_rate_28d",
    *(f"accept_rate_{c}_28d" for c in TIP_CATEGORIES),
)


V1 = TIP_SCORER_V1.columns
V2 = TIP_SCORER_V2.columns
WITH_CROSSES = (*V1, *CROSS_FEATURES)  # each category indicator times a request input

# --- (g) the user's effects over a population model ------------------------------------------
#
# The population model sees what users share: v2's columns but the user's own accept rates,
# preferred hour and what is computed from them (crosses included).
OWN_RATES_AND_HOURS = (
    "tip_accept_rate_28d",
    *(f"accept_rate_{c}_28d" for c in TIP_CATEGORIES),
    "category_affinity",
    "category_lift",
    "preferred_hour",
    "hour_gap",
    "in_preferred_window",
)
POPULATION = tuple(f for f in V2 if f.split("_x_")[-1] not in OWN_RATES_AND_HOURS)
FOLDS = 5


def logit_rates(x: pd.DataFrame) -> pd.DataFrame:
    """`x` with the accept rates on the logit scale (where the true logit adds them up) and
    whether each count is non-zero, crossed with the category too. No threshold of the
    simulator's (open >= 6, overdue >= 3) is written in."""
    out = x.copy()
    for name in RATES:
        rate = out[name].clip(0.01, 0.99)
        out[name] = np.log(rate / (1 - rate))
    for name in COUNTS:
        out[f"any_{name}"] = (out[name] > 0).astype(float)
        for flag in CATEGORY_COLUMNS:
            out[f"{flag}_x_any_{name}"] = out[flag] * out[f"any_{name}"]
    return out


# --- the worlds ----------------------------------------------------------------------------


def world_flags(args: argparse.Namespace, seed: int) -> dict:
    return {"users": args.users, "days": args.days, "seed": seed, "end": END.isoformat()}


def seed_dir(scratch: Path, args: argparse.Namespace, seed: int) -> Path:
    return scratch / f"world-{args.users}u-{args.days}d-s{seed}"


def cached(scratch: Path, args: argparse.Namespace, seed: int) -> bool:
    manifest = seed_dir(scratch, args, seed) / "cached.json"
    return manifest.exists() and json.loads(manifest.read_text()) == world_flags(args, seed)


def build(scratch: Path, args: argparse.Namespace, seed: int) -> None:
    """In the --build process: simulate, features, the training set's rows, cached."""
    from flows.features import FeaturesParams, features
    from flows.shards import task_runner
    from flows.simulate import SimulateParams, read_world_users, simulate
    from flows.training_shards import training_set_shards
    from service.settings import Settings

    where = seed_dir(scratch, args, seed)
    shutil.rmtree(where, ignore_errors=True)
    settings = Settings(home=where / "home")
    started = time.perf_counter()
    simulate(SimulateParams(users=args.users, days=args.days, seed=seed, end=END), settings)
    features(FeaturesParams(as_of=AS_OF), settings)
    # As `tipml train` builds it (flows/training.py), on the runner the settings name.
    build_set = training_set_shards.with_options(task_runner=task_runner(settings))
    rows = build_set(settings, TrainParams(as_of=AS_OF), AS_OF)
    rows.to_parquet(where / "rows.parquet", index=False)
    users = read_world_users(settings)
    users["receptivity"] = users["receptivity"].map(json.dumps)
    users.to_parquet(where / "users.parquet", index=False)
    if not args.keep:
        shutil.rmtree(settings.home)
    (where / "cached.json").write_text(json.dumps(world_flags(args, seed)))
    print(f"seed {seed}: built {len(rows):,} rows in {time.perf_counter() - started:.0f} s")


def build_missing(scratch: Path, args: argparse.Namespace) -> None:
    missing = [s for s in args.seeds if not cached(scratch, args, s)]
    if not missing:
        print(f"reusing the worlds' rows in {scratch}", flush=True)
        return
    print(f"building seeds {missing} into {scratch} ...", flush=True)
    command = [sys.executable, "-m", "perf.scorer_quality", "--build", *map(str, missing)]
    command += ["--users", str(args.users), "--days", str(args.days), "--scratch", str(scratch)]
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    done = subprocess.run(
        [*command, *(["--keep"] if args.keep else [])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    print(done.stdout.strip(), flush=True)
    if done.returncode:
        raise SystemExit(f"the build failed:\n{done.stderr[-3000:]}")


@dataclass(frozen=True)
class Seed:
    seed: int
    data: TrainingSet
    truth_train: pd.DataFrame  # ceiling_model_inputs(V2) of the training rows
    truth_valid: pd.DataFrame
    ceiling: np.ndarray  # the observable ceiling's probability of each validation row
    oracle: np.ndarray


def load(scratch: Path, args: argparse.Namespace, seed: int) -> Seed:
    where = seed_dir(scratch, args, seed)
    users = pd.read_parquet(where / "users.parquet")
    users["receptivity"] = users["receptivity"].map(json.loads)
    params = TrainParams()
    rows = pd.read_parquet(where / "rows.parquet")
    if not set(V2) <= set(rows.columns):
        raise SystemExit(f"seed {seed}: the cached rows are not tip_scorer_v2's: delete {where}")
    rows = rows.join(history_posteriors(rows, users))
    data = split_training_set(rows, AS_OF, params.validation_days, params.min_rows, V2)
    truth_train = ceiling_inputs(data.train, users, V2)
    truth_valid = ceiling_inputs(data.valid, users, V2)
    ceiling, oracle = observable_ceiling(data.valid), oracle_p(data.valid)
    if truth_train is None or truth_valid is None or ceiling is None or oracle is None:
        raise SystemExit(f"seed {seed}: the cached rows lack the simulator's truth")
    return Seed(seed, data, truth_train, truth_valid, ceiling, oracle)


# --- the rows of the table ------------------------------------------------------------------


@dataclass
class Fit:
    p: np.ndarray  # on the validation rows
    note: str = ""


Run = Callable[[Seed], Fit]


def fitted(make: Callable[[], BaseEstimator], x_train: pd.DataFrame, s: Seed, x_valid) -> Fit:
    model = make()
    model.fit(x_train, s.data.y_train)
    return Fit(model.predict_proba(x_valid)[:, 1])


def chosen_by_training(columns: tuple[str, ...]) -> Run:
    """What `tipml train` chooses on `columns`: every candidate fitted, the lowest log loss."""

    def run(s: Seed) -> Fit:
        x_train, x_valid = s.data.train[list(columns)], s.data.valid[list(columns)]
        candidates = fit_candidates(x_train, s.data.y_train, x_valid, s.data.y_valid)
        chosen = candidates.chosen
        return Fit(chosen.model.predict_proba(x_valid)[:, 1], chosen.name)

    return run


def gbm(**changes: object) -> Callable[[], BaseEstimator]:
    return lambda: CANDIDATES[GBM]().set_params(**changes)


def on_inputs(
    columns: tuple[str, ...],
    make: Callable,
    transform: Callable[[pd.DataFrame], pd.DataFrame] = lambda x: x,
) -> Run:
    def run(s: Seed) -> Fit:
        x_train, x_valid = s.data.train[list(columns)], s.data.valid[list(columns)]
        return fitted(make, transform(x_train), s, transform(x_valid))

    return run


def tuned(grid: dict[str, tuple[float, ...]]) -> Run:
    def run(s: Seed) -> Fit:
        x, y = s.data.train[list(V1)], s.data.y_train
        split = validation_start(s.data.validation_start, INNER_DAYS)
        inner = (s.data.train["event_timestamp"] >= split).to_numpy()
        best: tuple[float, dict[str, float], int] = (np.inf, {}, 0)
        for values in itertools.product(*grid.values()):
            setting = dict(zip(grid, values, strict=True))
            model = CANDIDATES[GBM]().set_params(
                max_iter=MAX_TREES,
                early_stopping=True,
                scoring="loss",
                n_iter_no_change=PATIENCE,
                **setting,
            )
            model.fit(x[~inner], y[~inner], X_val=x[inner], y_val=y[inner])
            # validation_score_[i]: minus the held-out log loss after i trees.
            trees = int(np.argmax(model.validation_score_))
            if -model.validation_score_[trees] < best[0]:
                best = (-model.validation_score_[trees], setting, max(trees, 1))
        _, setting, trees = best
        model = CANDIDATES[GBM]().set_params(max_iter=trees, **setting)
        model.fit(x, y)
        shown = ", ".join(f"{k}={v:g}" for k, v in setting.items())
        # A choice at either end of a range of three or more values: the grid may be too small.
        edges = [
            k for k, v in setting.items() if len(grid[k]) > 2 and v in (min(grid[k]), max(grid[k]))
        ]
        if edges:
            shown += f" (at the grid's edge in {', '.join(edges)})"
        return Fit(model.predict_proba(s.data.valid[list(V1)])[:, 1], f"{shown}, trees={trees}")

    return run


def probe(columns: tuple[str, ...], truth: tuple[str, ...]) -> Run:
    """The GBM on `columns` of the estimated inputs and `truth` of the true ones."""

    def inputs(estimates: pd.DataFrame, true: pd.DataFrame) -> pd.DataFrame:
        return pd.concat([estimates[list(columns)], true[list(truth)]], axis=1)

    return lambda s: fitted(
        CANDIDATES[GBM],
        inputs(s.data.train, s.truth_train),
        s,
        inputs(s.data.valid, s.truth_valid),
    )


# What the preferred hour decides: the probe takes these from the true hour.
HOURS = tuple(
    f for f in V2 if f in ("preferred_hour", "hour_gap", "in_preferred_window") or "hour_gap" in f
)
NOT_HOURS = tuple(f for f in V2 if f not in HOURS)
BASELINE = "tip_scorer_v1 (baseline)"
HISTORY_BOUND = "bound: Bayes from history"


@dataclass(frozen=True)
class Row:
    name: str
    kind: str  # "current", "variant" (KEEP/DROP), "probe" or "bound"
    run: Run


def population_offsets(train: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """The population model's logit of each of `rows`, cross-fitted by user: the users fall
    into FOLDS folds, and a user's rows are scored by the GBM on POPULATION fitted on the
    training rows of the other folds. A model that had seen a user's own outcomes would leave
    smaller effects on its training rows than on the rows it never saw."""
    users = np.sort(rows["user_id"].astype(str).unique())
    fold_of = pd.Series(np.arange(len(users)) % FOLDS, index=users)
    row_fold = rows["user_id"].astype(str).map(fold_of).to_numpy()
    train_fold = train["user_id"].astype(str).map(fold_of).to_numpy()
    out = np.empty(len(rows))
    for fold in range(FOLDS):
        others = train[train_fold != fold]
        model = CANDIDATES[GBM]().fit(others[list(POPULATION)], others["accepted"])
        p = model.predict_proba(rows.loc[row_fold == fold, list(POPULATION)])[:, 1]
        p = np.clip(p, 1e-6, 1 - 1e-6)
        out[row_fold == fold] = np.log(p / (1 - p))
    return out


def with_user_effects(s: Seed) -> Fit:
    """The GBM on v2 plus USER_EFFECTS (feature_repo/user_effects.py) from the cross-fitted
    population offsets: each row's effects come from its user's outcomes settled before its
    day, training and validation days alike (as a daily batch step would compute them)."""
    rows = pd.concat([s.data.train, s.data.valid], ignore_index=True)
    offsets = population_offsets(rows.iloc[: len(s.data.train)], rows)
    effects = user_effects(rows, offsets, ATTRIBUTION_WINDOW)
    x = pd.concat([rows[list(V2)], effects], axis=1)
    train = np.arange(len(rows)) < len(s.data.train)
    model = CANDIDATES[GBM]().fit(x[train], s.data.y_train)
    return Fit(model.predict_proba(x[~train])[:, 1])


def rows(grid: str | None) -> list[Row]:
    lr, tree = CANDIDATES["logistic_regression"], CANDIDATES[GBM]
    tuned_gbm = [] if grid is None else [Row("(a) tuned GBM", "variant", tuned(GRIDS[grid]))]
    return [
        Row(BASELINE, "current", chosen_by_training(V1)),
        *tuned_gbm,
        Row("(b) monotonic GBM", "variant", on_inputs(V1, gbm(monotonic_cst=MONOTONIC))),
        Row("(c) LR + crosses", "variant", on_inputs(WITH_CROSSES, lr)),
        Row("(c) LR + crosses, logit rates", "variant", on_inputs(WITH_CROSSES, lr, logit_rates)),
        Row("(d) GBM + crosses", "variant", on_inputs(WITH_CROSSES, tree)),
        Row("(e) GBM + cohort rates", "variant", on_inputs((*V1, *COHORT_RATES), tree)),
        Row("(f) tip_scorer_v2 (d + e)", "variant", chosen_by_training(V2)),
        Row("(g) GBM on v2 + user effects", "variant", with_user_effects),
        Row("probe: GBM on v2", "probe", probe(V2, ())),
        Row("probe: + true base_logit", "probe", probe(V2, ("true_base_logit",))),
        Row("probe: + true receptivity", "probe", probe(V2, ("true_receptivity",))),
        Row("probe: true preferred_hour", "probe", probe(NOT_HOURS, HOURS)),
        Row("probe: all three (ceiling model)", "probe", probe((), ceiling_model_inputs(V2))),
        Row(
            "probe: + posterior from history", "probe", on_inputs((*V2, *POSTERIOR_FEATURES), tree)
        ),
        Row(HISTORY_BOUND, "bound", lambda s: Fit(s.data.valid["p_history"].to_numpy())),
    ]


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    metrics: Metrics
    note: str
    seconds: float


def measure(row: Row, s: Seed) -> Result:
    started = time.perf_counter()
    fit = row.run(s)
    seconds = time.perf_counter() - started
    metrics = evaluate(s.data.y_valid, fit.p, oracle=s.oracle, ceiling=s.ceiling)
    return Result(metrics, fit.note, seconds)


def verdict_of(row: Row, wins: int, seeds: int) -> str:
    if row.kind == "variant":
        return "KEEP" if wins == seeds else "DROP"
    return row.kind


def report(table: list[Row], results: dict[str, dict[int, Result]], seeds: list[int]) -> None:
    base = results[BASELINE]

    def deltas(name: str, seed: int) -> tuple[float, float]:
        m, b = results[name][seed].metrics, base[seed].metrics
        return m.log_loss - b.log_loss, m.auc - b.auc

    def wins(name: str) -> int:
        return sum(d_loss < 0 < d_auc for d_loss, d_auc in (deltas(name, s) for s in seeds))

    print(
        f"\n{'':<33}{'log loss':>15}{'AUC':>15}{'AUC/ceiling':>15}{'ECE':>15}"
        f"{'mean diff. from v1':>25}{'fit s':>7}"
    )
    print(
        f"{'':<33}{'mean  worst':>15}{'mean  worst':>15}{'mean  worst':>15}{'mean  worst':>15}"
        f"{'log loss':>11}{'AUC':>9}{'wins':>5}{'':>7}  verdict"
    )
    for row in table:
        m = [results[row.name][s].metrics for s in seeds]
        loss, auc = [x.log_loss for x in m], [x.auc for x in m]
        ratio, ece = [x.auc_to_ceiling or 0.0 for x in m], [x.ece for x in m]
        d = np.array([deltas(row.name, s) for s in seeds]).mean(axis=0)
        seconds = sum(results[row.name][s].seconds for s in seeds)
        won = "-" if row.kind == "current" else f"{wins(row.name)}/{len(seeds)}"
        print(
            f"{row.name:<33}{np.mean(loss):>8.4f}{max(loss):>7.4f}"
            f"{np.mean(auc):>8.4f}{min(auc):>7.4f}{np.mean(ratio):>8.4f}{min(ratio):>7.4f}"
            f"{np.mean(ece):>8.4f}{max(ece):>7.4f}{d[0]:>+11.4f}{d[1]:>+9.4f}{won:>5}"
            f"{seconds:>7.0f}  {verdict_of(row, wins(row.name), len(seeds))}"
        )

    print("\nper seed, difference from the baseline (tip_scorer_v1): log loss / AUC")
    print(f"{'':<33}" + "".join(f"{'seed ' + str(s):>20}" for s in seeds))
    for row in table[1:]:
        cells = (f"{dl:+.4f} / {da:+.4f}" for dl, da in (deltas(row.name, s) for s in seeds))
        print(f"{row.name:<33}" + "".join(f"{c:>20}" for c in cells))

    for row in table:
        notes = {s: results[row.name][s].note for s in seeds if results[row.name][s].note}
        for s, note in notes.items():
            print(f"{row.name}, seed {s}: {note}")

    print()
    kept = [r.name for r in table if verdict_of(r, wins(r.name), len(seeds)) == "KEEP"]
    dropped = [r.name for r in table if verdict_of(r, wins(r.name), len(seeds)) == "DROP"]
    print(f"KEEP: {', '.join(kept) or 'none'}")
    print(f"DROP: {', '.join(dropped) or 'none'}")
    for name in (BASELINE, *kept):
        worst = min(results[name][s].metrics.auc_to_ceiling or 0.0 for s in seeds)
        met = "MET" if worst >= GOAL_TO_CEILING else "NOT MET"
        goal = f"goal AUC >= {GOAL_TO_CEILING} x observable ceiling on every seed, {name}"
        print(f"{goal}: {met} ({worst:.4f} at worst)")
    on_estimates, *probes = [r.name for r in table if r.kind == "probe"]

    def gain(name: str) -> float:
        return float(
            np.mean(
                [results[name][s].metrics.auc - results[on_estimates][s].metrics.auc for s in seeds]
            )
        )

    print("probes, mean AUC gained over the same GBM on the estimates:")
    for name in sorted(probes, key=gain, reverse=True):
        print(f"  {name:<33}{gain(name):+.4f}")
    bound = [results[HISTORY_BOUND][s].metrics.auc_to_ceiling or 0.0 for s in seeds]
    print("\nAUC / observable ceiling, and / the Bayes bound from history, per seed")
    print(f"{'':<33}" + "".join(f"{'seed ' + str(s):>20}" for s in seeds))
    for row in table:
        cells = (
            f"{m.auc_to_ceiling or 0.0:.4f} / {m.auc / results[HISTORY_BOUND][s].metrics.auc:.4f}"
            for s, m in ((s, results[row.name][s].metrics) for s in seeds)
        )
        print(f"{row.name:<33}" + "".join(f"{c:>20}" for c in cells))
    reachable = "reachable" if min(bound) >= GOAL_TO_CEILING else "NOT reachable"
    print(
        f"the goal from the history the world holds, by the Bayes-optimal scorer that knows the "
        f"world's structure: {reachable} (AUC/ceiling {np.mean(bound):.4f} mean, "
        f"{min(bound):.4f} at worst)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--days", type=int, default=35)
    parser.add_argument(
        "--scratch",
        type=Path,
        default=Path(tempfile.gettempdir()) / "tipml-scorer-quality",
        help="where the worlds are built and their rows cached (and reused)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the homes, not only the rows")
    parser.add_argument("--grid", choices=GRIDS, default="default", help="the tuned GBM's grid")
    parser.add_argument(
        "--skip-tuned", action="store_true", help="leave out the tuned GBM (the slowest row)"
    )
    parser.add_argument("--build", type=int, nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    scratch = args.scratch.resolve()
    if args.build:
        from perf.scale import prefect_server

        with prefect_server():
            for seed in args.build:
                build(scratch, args, seed)
        return

    load_average = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load_average}", flush=True)
    started = time.perf_counter()
    scratch.mkdir(parents=True, exist_ok=True)
    build_missing(scratch, args)
    built = time.perf_counter() - started
    print(f"{args.users} users, {args.days} days to {END}; as of {AS_OF:%Y-%m-%d %H:%M} UTC")
    table = rows(None if args.skip_tuned else args.grid)
    results: dict[str, dict[int, Result]] = {row.name: {} for row in table}
    for seed in args.seeds:
        s = load(scratch, args, seed)
        for row in table:
            results[row.name][seed] = measure(row, s)
        m = results[BASELINE][seed].metrics
        print(
            f"seed {seed}: {len(s.data.train):,} training and {len(s.data.valid):,} validation "
            f"rows; observable ceiling AUC {m.ceiling_auc:.4f}, oracle AUC {m.oracle_auc:.4f}; "
            f"{BASELINE} ({results[BASELINE][seed].note}) AUC {m.auc:.4f}",
            flush=True,
        )
    report(table, results, args.seeds)
    print(f"\ntotal {time.perf_counter() - started:.0f} s (building {built:.0f} s)")


if __name__ == "__main__":
    main()
