"""Offline evaluation of a scorer on its validation rows: discrimination (against the oracle
and the ceilings where they are known, flows/modeling/ceiling.py), calibration, and per-slice
fairness."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import BaseModel
from sklearn.base import BaseEstimator
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from flows.modeling.ceiling import CeilingModel, observable_ceiling, oracle_p

CALIBRATION_BINS = 10
NEW_USER_DAYS = 7  # users younger than this are the fairness slice tenure=new


class Metrics(BaseModel):
    rows: int
    positives: int
    auc: float
    log_loss: float
    brier: float
    ece: float
    # Simulated worlds only (flows/modeling/ceiling.py): the true probability's AUC, the same
    # with the prompt version averaged out (the observable ceiling), the AUC of the scorer's
    # learner given the users' true traits (the ceiling model), and the Bayes-optimal AUC
    # from the users' history (the history bound).
    oracle_auc: float | None = None
    ceiling_auc: float | None = None
    ceiling_model_auc: float | None = None
    bound_auc: float | None = None

    @property
    def auc_to_oracle(self) -> float | None:
        return self.auc / self.oracle_auc if self.oracle_auc else None

    @property
    def auc_to_ceiling(self) -> float | None:
        return self.auc / self.ceiling_auc if self.ceiling_auc else None

    @property
    def auc_to_bound(self) -> float | None:
        return self.auc / self.bound_auc if self.bound_auc else None

    def discrimination(self) -> str:
        """The model's AUC beside the ceilings and the oracle, on one line."""
        return (
            f"AUC {self.auc:.4f} | observable ceiling AUC {_auc(self.ceiling_auc)} "
            f"(AUC/ceiling {_ratio(self.auc_to_ceiling)}) | oracle AUC {_auc(self.oracle_auc)} "
            f"(AUC/oracle {_ratio(self.auc_to_oracle)}) | ceiling model AUC "
            f"{_auc(self.ceiling_model_auc)} | history bound AUC {_auc(self.bound_auc)} "
            f"(AUC/bound {_ratio(self.auc_to_bound)})"
        )


def _auc(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.4f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


class SliceRow(BaseModel):
    slice: str  # e.g. "persona"
    value: str  # e.g. "parent"
    rows: int
    auc: float | None  # None when the slice holds one class only
    mean_predicted: float
    observed: float

    @property
    def gap(self) -> float:
        return abs(self.mean_predicted - self.observed)


def _bins(p: np.ndarray) -> np.ndarray:
    """Equal-count bins: accept probabilities are skewed, equal-width bins would sit empty."""
    edges = np.quantile(p, np.linspace(0, 1, CALIBRATION_BINS + 1)[1:-1])
    return np.searchsorted(edges, p, side="right")


def expected_calibration_error(y: np.ndarray, p: np.ndarray) -> float:
    bins = _bins(p)
    total = 0.0
    for b in np.unique(bins):
        mask = bins == b
        total += mask.sum() / len(p) * abs(p[mask].mean() - y[mask].mean())
    return float(total)


def evaluate(
    y: np.ndarray,
    p: np.ndarray,
    oracle: np.ndarray | None = None,
    ceiling: np.ndarray | None = None,
    ceiling_model: np.ndarray | None = None,
    bound: np.ndarray | None = None,
) -> Metrics:
    """Metrics of predictions `p` of labels `y`, with the AUC of each reference scoring of the
    same rows that is given: the oracle's, the observable ceiling's, the ceiling model's, the
    history bound's."""
    y = np.asarray(y, dtype=np.int64)
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)

    def auc(reference: np.ndarray | None) -> float | None:
        return None if reference is None else float(roc_auc_score(y, reference))

    return Metrics(
        rows=len(y),
        positives=int(y.sum()),
        auc=float(roc_auc_score(y, p)),
        log_loss=float(log_loss(y, p, labels=[0, 1])),
        brier=float(brier_score_loss(y, p)),
        ece=expected_calibration_error(y, p),
        oracle_auc=auc(oracle),
        ceiling_auc=auc(ceiling),
        ceiling_model_auc=auc(ceiling_model),
        bound_auc=auc(bound),
    )


def slice_table(y: np.ndarray, p: np.ndarray, slices: pd.DataFrame) -> list[SliceRow]:
    """AUC and mean predicted vs observed accept rate for every value of every slice column."""
    y, p = np.asarray(y), np.asarray(p)
    rows = []
    for column in slices.columns:
        values = slices[column].astype(str).to_numpy()
        for value in sorted(set(values)):
            mask = values == value
            both_classes = 0 < y[mask].sum() < mask.sum()
            rows.append(
                SliceRow(
                    slice=column,
                    value=value,
                    rows=int(mask.sum()),
                    auc=float(roc_auc_score(y[mask], p[mask])) if both_classes else None,
                    mean_predicted=float(p[mask].mean()),
                    observed=float(y[mask].mean()),
                )
            )
    return rows


def fairness_slices(rows: pd.DataFrame, world_users: pd.DataFrame | None) -> pd.DataFrame:
    """Fairness slices: persona (simulated worlds only), timezone region, new vs tenured."""
    out = pd.DataFrame(index=rows.index)
    if world_users is not None:
        out["persona"] = rows["user_id"].map(world_users.set_index("user_id")["persona"])
    out["timezone_region"] = rows["timezone"].str.split("/").str[0]
    out["tenure"] = (rows["tenure_days"] < NEW_USER_DAYS).map({True: "new", False: "tenured"})
    return out.fillna("unknown")


@dataclass(frozen=True)
class Evaluation:
    p_accept: np.ndarray  # the scorer's predictions, one per validation row
    metrics: Metrics
    fairness: list[SliceRow]


def evaluate_scorer(
    model: BaseEstimator,
    valid: pd.DataFrame,
    columns: tuple[str, ...],
    world_users: pd.DataFrame | None,
    ceiling_model: CeilingModel | None = None,
    bound: np.ndarray | None = None,
) -> Evaluation:
    """Metrics against the oracle and the ceilings, and fairness slices, of `model` on the
    validation rows (its inputs: `columns`); `ceiling_model` and the history `bound` were
    scored on the same rows."""
    p_accept = model.predict_proba(valid[list(columns)])[:, 1]
    y = valid["accepted"].to_numpy()
    return Evaluation(
        p_accept=p_accept,
        metrics=evaluate(
            y,
            p_accept,
            # Known in a simulated world only.
            oracle=oracle_p(valid),
            ceiling=observable_ceiling(valid),
            ceiling_model=None if ceiling_model is None else ceiling_model.p_accept,
            bound=bound,
        ),
        fairness=slice_table(y, p_accept, fairness_slices(valid, world_users)),
    )


def reliability_plot(y: np.ndarray, p: np.ndarray, title: str) -> Figure:
    """Observed vs predicted accept rate per equal-count bin (no pyplot: no display needed)."""
    bins = _bins(p)
    predicted = [p[bins == b].mean() for b in np.unique(bins)]
    observed = [np.asarray(y)[bins == b].mean() for b in np.unique(bins)]
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    top = max(max(predicted), max(observed)) * 1.1
    ax.plot([0, top], [0, top], linestyle="--", color="grey", label="perfect calibration")
    ax.plot(predicted, observed, marker="o", label="model")
    ax.set(xlabel="mean predicted accept rate", ylabel="observed accept rate", title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig
