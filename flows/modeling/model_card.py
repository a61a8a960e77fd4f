"""Model cards: what a scorer version is, what it reads, how well it did, where it has served.

The card is data (JSON beside the model) rendered to markdown for people; its rollout history
grows by a RolloutDecision when the version is registered and at every promotion decision.
"""

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from feature_repo.candidate_features import CANDIDATE_FEATURES
from feature_repo.cohort_features import COHORT_FEATURES
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.profile_features import PROFILE_FEATURES
from feature_repo.scorer_versions import CATEGORY_COLUMNS, SCORER_VERSIONS
from flows.modeling.evaluation import Metrics, SliceRow
from flows.modeling.gates import GateCheck
from flows.modeling.shadow_summary import ShadowSummary

PURPOSE = (
    "Scores candidate tips for a user at request time: the probability that the user accepts "
    "the tip if shown now. The recommender ranks candidates by it."
)
# What the discrimination columns of the metrics table mean (flows/modeling/ceiling.py).
CEILINGS = (
    "Oracle AUC: the simulator's true accept probability, which knows the prompt version "
    "drawn after scoring. Observable ceiling AUC: the same with the prompt version averaged "
    "out, the best ranking of a scorer that knows each user's true traits. Ceiling model AUC: "
    "this model's learner on the same rows, given the users' true traits in place of the "
    "features' estimates. History bound AUC: the Bayes-optimal probability given each user's "
    "earlier outcomes and the world's exact structure, which no scorer can beat on these rows "
    "(AUC / bound: how much of the gap any scorer could still close). All four need a "
    "simulated world: '-' without one. The gate reads AUC / oracle (flows/modeling/gates.py).",
)
# MLflow's model_versions.description column (VARCHAR(5000) on PostgreSQL and MySQL).
DESCRIPTION_LIMIT = 5000
KNOWN_LIMITS = (
    "Trained and validated on logged impressions only: tips the previous policy chose to show.",
    "The prompt version that writes a tip is not an input; its effect is averaged over.",
    "Per-category accept rates of new users are fallbacks until they have seen tips.",
    "Profile features are daily (UTC midnight); changes within a day reach the model next day.",
)


class FeatureDoc(BaseModel):
    name: str
    kind: Literal["profile", "cohort", "context", "candidate", "category"]
    dtype: str
    ttl_seconds: int | None = None
    fallback: float | None = None
    description: str


class Window(BaseModel):
    start: datetime
    end: datetime


class RolloutDecision(BaseModel):
    """One entry of a version's rollout history: what happened to it, when and why."""

    at: datetime
    action: Literal["registered", "promoted", "kept", "replaced"]
    reason: str


class ModelCard(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)  # MLflow numbers versions

    model_name: str
    version: str
    run_id: str
    purpose: str = PURPOSE
    feature_service: str
    inputs: list[FeatureDoc]
    model_type: str
    candidates: dict[str, float]  # validation log loss per candidate model
    training_window: Window
    validation_window: Window
    train_rows: int
    train_positives: int
    metrics: Metrics
    fairness: list[SliceRow]
    checks: list[GateCheck]
    shadow: ShadowSummary | None = None  # live traffic scored beside the champion
    known_limits: list[str] = list(KNOWN_LIMITS)
    rollout_history: list[RolloutDecision] = []

    def summary(self) -> str:
        last = self.rollout_history[-1] if self.rollout_history else None
        return "\n".join(
            [
                f"{self.model_name} v{self.version} ({self.model_type}) on {self.feature_service}",
                f"trained on {self.train_rows} impressions "
                f"{self.training_window.start:%Y-%m-%d} .. {self.training_window.end:%Y-%m-%d}, "
                f"validated on {self.metrics.rows}",
                self.metrics.discrimination(),
                f"log loss {self.metrics.log_loss:.4f}; ECE {self.metrics.ece:.4f}",
                *(f"{'pass' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks),
                f"last decision: {last.action} ({last.reason})" if last else "no decision yet",
            ]
        )

    def description(self, limit: int = DESCRIPTION_LIMIT) -> str:
        """The registry's short form: summary and the latest decisions, within `limit` chars."""
        head = f"{self.summary()}\n\nFull card: artifact `model_card.md` of run {self.run_id}."
        history = [
            f"- {d.at:%Y-%m-%d %H:%M} UTC {d.action}: {d.reason}" for d in self.rollout_history
        ]
        text = head
        for kept in range(len(history), -1, -1):
            text = "\n".join([head, "", "Rollout history (latest last):", *history[-kept:]])
            if len(text) <= limit or kept == 0:
                break
        return text[:limit]

    def _shadow_lines(self) -> list[str]:
        s = self.shadow
        if s is None:
            return ["No shadow traffic recorded (no champion to shadow yet)."]
        return [
            f"Scored beside champion v{s.champion_version} on {s.requests} live requests.",
            "",
            "| requests | rank agreement | top-choice agreement | mean score shift |",
            "| --- | --- | --- | --- |",
            f"| {s.requests} | {_fmt(s.rank_agreement, '.3f')} | "
            f"{_fmt(s.top_choice_agreement, '.3f')} | {_fmt(s.mean_score_shift, '+.4f')} |",
        ]

    def to_markdown(self) -> str:
        m = self.metrics
        lines = [
            f"# Model card: {self.model_name} version {self.version}",
            "",
            "## Purpose",
            self.purpose,
            "",
            "## Inputs",
            f"FeatureService `{self.feature_service}` (Feast), plus the candidate's category.",
            "",
            "| feature | kind | dtype | TTL (s) | fallback | description |",
            "| --- | --- | --- | --- | --- | --- |",
            *(
                f"| {f.name} | {f.kind} | {f.dtype} | {f.ttl_seconds or '-'} | "
                f"{'-' if f.fallback is None else f.fallback} | {f.description} |"
                for f in self.inputs
            ),
            "",
            "## Training",
            f"- model: {self.model_type} (MLflow run `{self.run_id}`)",
            "- candidates by validation log loss: "
            + ", ".join(f"{k} {v:.4f}" for k, v in self.candidates.items()),
            f"- training window: {self.training_window.start:%Y-%m-%d %H:%M} .. "
            f"{self.training_window.end:%Y-%m-%d %H:%M} UTC, {self.train_rows} impressions, "
            f"{self.train_positives} accepted",
            f"- validation window: {self.validation_window.start:%Y-%m-%d %H:%M} .. "
            f"{self.validation_window.end:%Y-%m-%d %H:%M} UTC, {m.rows} impressions, "
            f"{m.positives} accepted",
            "",
            "## Offline metrics (validation)",
            "| AUC | observable ceiling AUC | AUC / ceiling | oracle AUC | AUC / oracle "
            "| ceiling model AUC | history bound AUC | AUC / bound | log loss | Brier | ECE |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            f"| {m.auc:.4f} | {_fmt(m.ceiling_auc, '.4f')} | {_fmt(m.auc_to_ceiling, '.4f')} | "
            f"{_fmt(m.oracle_auc, '.4f')} | {_fmt(m.auc_to_oracle, '.4f')} | "
            f"{_fmt(m.ceiling_model_auc, '.4f')} | {_fmt(m.bound_auc, '.4f')} | "
            f"{_fmt(m.auc_to_bound, '.4f')} | {m.log_loss:.4f} | {m.brier:.4f} | {m.ece:.4f} |",
            "",
            *CEILINGS,
            "",
            "Reliability plot: `plots/reliability.png`.",
            "",
            "## Fairness (validation slices)",
            "| slice | value | rows | AUC | mean predicted | observed | gap |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            *(
                f"| {s.slice} | {s.value} | {s.rows} | "
                f"{'-' if s.auc is None else f'{s.auc:.3f}'} | {s.mean_predicted:.3f} | "
                f"{s.observed:.3f} | {s.gap:.3f} |"
                for s in self.fairness
            ),
            "",
            "## Shadow traffic",
            *self._shadow_lines(),
            "",
            "## Checks",
            *(f"- {'pass' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in self.checks),
            "",
            "## Known limits",
            *(f"- {limit}" for limit in self.known_limits),
            "",
            "## Rollout history",
            *(
                f"- {d.at:%Y-%m-%d %H:%M:%S} UTC {d.action}: {d.reason}"
                for d in self.rollout_history
            ),
        ]
        return "\n".join(lines) + "\n"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def feature_docs(feature_service: str) -> list[FeatureDoc]:
    """What the scorer version reads, documented from the feature tables: its model inputs in
    order, and the cohort counts its candidate features are computed from."""
    version = SCORER_VERSIONS[feature_service]
    docs = {
        **{
            f.name: FeatureDoc(
                name=f.name,
                kind="profile",
                dtype=f.dtype,
                ttl_seconds=int(f.ttl.total_seconds()),
                fallback=f.fallback,
                description=f.description,
            )
            for f in PROFILE_FEATURES
        },
        **{
            f.name: FeatureDoc(
                name=f.name,
                kind="context",
                dtype=f.dtype,
                fallback=f.fallback,
                description=f"{f.description} ({f.freshness})",
            )
            for f in CONTEXT_FEATURES
        },
        **{
            f.name: FeatureDoc(
                name=f.name, kind="candidate", dtype=f.dtype, description=f.description
            )
            for f in CANDIDATE_FEATURES
        },
        **{
            name: FeatureDoc(
                name=name,
                kind="category",
                dtype="int64",
                description="1 when the candidate is in this category",
            )
            for name in CATEGORY_COLUMNS
        },
    }
    cohort = [
        FeatureDoc(
            name=f.name,
            kind="cohort",
            dtype=f.dtype,
            ttl_seconds=int(f.ttl.total_seconds()),
            fallback=f.fallback,
            description=f"{f.description} (not a model input: the cohort rates' source)",
        )
        for f in COHORT_FEATURES
        if version.reads_cohort
    ]
    return [*(docs[name] for name in version.columns), *cohort]
