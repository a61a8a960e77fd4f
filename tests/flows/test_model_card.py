"""Model cards render whole as an artifact and short enough for the registry's description."""

from datetime import UTC, datetime, timedelta

from flows.modeling.evaluation import Metrics, SliceRow
from flows.modeling.gates import GateCheck
from flows.modeling.model_card import (
    DESCRIPTION_LIMIT,
    ModelCard,
    RolloutDecision,
    Window,
    feature_docs,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def card(decisions: int) -> ModelCard:
    return ModelCard(
        model_name="tip-scorer",
        version=3,  # MLflow hands out numbers
        run_id="abc123",
        feature_service="tip_scorer_v2",
        inputs=feature_docs("tip_scorer_v2"),
        model_type="hist_gradient_boosting",
        candidates={"logistic_regression": 0.36, "hist_gradient_boosting": 0.35},
        training_window=Window(start=T0, end=T0 + timedelta(days=20)),
        validation_window=Window(start=T0 + timedelta(days=20), end=T0 + timedelta(days=27)),
        train_rows=10_000,
        train_positives=1_200,
        metrics=Metrics(
            rows=3000,
            positives=360,
            auc=0.72,
            log_loss=0.35,
            brier=0.1,
            ece=0.01,
            oracle_auc=0.76,
            ceiling_auc=0.75,
            ceiling_model_auc=0.74,
            bound_auc=0.7272,
        ),
        fairness=[
            SliceRow(
                slice="persona",
                value="parent",
                rows=800,
                auc=0.7,
                mean_predicted=0.12,
                observed=0.15,
            )
        ],
        checks=[GateCheck(name="auc_to_oracle", passed=True, detail="AUC/oracle 0.947")],
        rollout_history=[
            RolloutDecision(
                at=T0 + timedelta(days=i), action="kept", reason=f"decision {i} " + "x" * 200
            )
            for i in range(decisions)
        ],
    )


def test_markdown_holds_every_section_and_every_input():
    text = card(2).to_markdown()
    for heading in (
        "Purpose",
        "Inputs",
        "Training",
        "Offline metrics",
        "Fairness",
        "Checks",
        "Known limits",
        "Rollout history",
    ):
        assert f"## {heading}" in text
    assert all(f"| {doc.name} |" in text for doc in feature_docs("tip_scorer_v2"))
    assert "| persona | parent | 800 | 0.700 | 0.120 | 0.150 | 0.030 |" in text
    assert card(2).version == "3"
    # Model, observable ceiling, oracle, each ratio, the ceiling model and the history bound.
    assert (
        "| 0.7200 | 0.7500 | 0.9600 | 0.7600 | 0.9474 | 0.7400 | 0.7272 | 0.9901 | 0.3500 |" in text
    )


def test_without_a_simulated_world_the_ceilings_are_dashes():
    unknown = {"oracle_auc": None, "ceiling_auc": None, "ceiling_model_auc": None}
    unknown |= {"bound_auc": None}
    bare = card(1).model_copy(update={"metrics": card(1).metrics.model_copy(update=unknown)})
    assert "| 0.7200 | - | - | - | - | - | - | - | 0.3500 |" in bare.to_markdown()
    assert "observable ceiling AUC unknown" in bare.summary()


def test_description_fits_the_registry_and_keeps_the_latest_decisions():
    long = card(60)
    text = long.description()
    assert len(text) <= DESCRIPTION_LIMIT
    assert "decision 59" in text and "decision 0 " not in text
    assert "model_card.md" in text
    assert (
        "AUC 0.7200 | observable ceiling AUC 0.7500 (AUC/ceiling 0.960) | oracle AUC 0.7600 "
        "(AUC/oracle 0.947) | ceiling model AUC 0.7400 | history bound AUC 0.7272 "
        "(AUC/bound 0.990)"
    ) in text
