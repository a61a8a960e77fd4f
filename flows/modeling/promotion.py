"""Promotion of the challenger: the versions holding the aliases, the gate they face, and the
decision that moves the aliases and records itself in the cards' rollout history.

The gate is the absolute checks (flows/modeling/gates.py) under the current policy and, when a
champion exists, a lower log loss than the champion's on validation rows neither model trained
on and agreement with it on shadow traffic (once there is enough).
"""

from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from sklearn.metrics import log_loss

from feature_repo.scorer_versions import SCORER_VERSIONS
from flows.modeling.gates import POLICY, GateCheck, absolute_checks
from flows.modeling.model_card import ModelCard, RolloutDecision
from flows.modeling.registration import read_card, read_validation_rows, training_end, write_card
from flows.modeling.shadow_summary import read_summary, shadow_check
from service.scoring.model_names import CHALLENGER, CHAMPION, FEATURE_SERVICE_TAG, MODEL_NAME
from service.scoring.model_registry import version_by_alias
from service.settings import Settings


@dataclass(frozen=True)
class Contenders:
    """The versions holding the aliases, when any does."""

    challenger: ModelVersion | None
    champion: ModelVersion | None


def read_contenders(client: MlflowClient) -> Contenders:
    return Contenders(
        challenger=version_by_alias(client, CHALLENGER), champion=version_by_alias(client, CHAMPION)
    )


def _predict(version: ModelVersion, rows: pd.DataFrame) -> pd.Series:
    model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version.version}")
    columns = SCORER_VERSIONS[version.tags[FEATURE_SERVICE_TAG]].columns
    return model.predict_proba(rows[list(columns)])[:, 1]


def compare_with_champion(
    client: MlflowClient, challenger: ModelVersion, champion: ModelVersion
) -> GateCheck:
    """Challenger vs champion log loss on challenger validation rows the champion never saw.

    The rows hold the challenger's inputs; a champion of another scorer version is compared
    when they hold its inputs too (a newer version adds columns to an older one's)."""
    name = "beats_champion"
    services = (challenger.tags.get(FEATURE_SERVICE_TAG), champion.tags.get(FEATURE_SERVICE_TAG))
    rows = read_validation_rows(client, challenger)
    if services[1] not in SCORER_VERSIONS or not set(SCORER_VERSIONS[services[1]].columns) <= set(
        rows.columns
    ):
        return GateCheck(
            name=name,
            passed=False,
            detail=f"the challenger's rows ({services[0]}) lack the champion's inputs "
            f"({services[1]}): no common rows",
        )
    rows = rows[rows["event_timestamp"] >= training_end(champion)]
    if len(rows) < POLICY.min_comparison_rows or rows["accepted"].nunique() < 2:
        return GateCheck(
            name=name,
            passed=False,
            detail=f"only {len(rows)} validation rows neither model trained on "
            f"(minimum {POLICY.min_comparison_rows})",
        )
    y = rows["accepted"].to_numpy()
    theirs = log_loss(y, _predict(champion, rows), labels=[0, 1])
    ours = log_loss(y, _predict(challenger, rows), labels=[0, 1])
    return GateCheck(
        name=name,
        passed=ours < theirs,
        detail=f"log loss {ours:.5f} vs champion v{champion.version} {theirs:.5f} "
        f"on {len(rows)} shared rows",
    )


@dataclass(frozen=True)
class GateResult:
    card: ModelCard  # the challenger's, with the shadow summary when there is a champion
    checks: list[GateCheck]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def reason(self, first_champion: bool) -> str:
        """Why the decision went as it did: the failed checks, else every check's detail."""
        if not self.passed:
            return "; ".join(f"{c.name}: {c.detail}" for c in self.checks if not c.passed)
        reason = "; ".join(c.detail for c in self.checks)
        return f"first champion; {reason}" if first_champion else reason


def run_gate(
    settings: Settings,
    client: MlflowClient,
    challenger: ModelVersion,
    champion: ModelVersion | None,
) -> GateResult:
    card = read_card(client, challenger)
    checks = absolute_checks(card.metrics, card.fairness)
    if champion is not None:
        checks.append(compare_with_champion(client, challenger, champion))
        card.shadow = read_summary(settings, str(champion.version), str(challenger.version))
        checks.append(shadow_check(card.shadow))
    return GateResult(card=card, checks=checks)


def _record(client: MlflowClient, card: ModelCard, decision: RolloutDecision) -> None:
    card.rollout_history.append(decision)
    write_card(client, card)


def finish_promotion(client: MlflowClient, champion: ModelVersion) -> None:
    """Clear the alias challenger from the champion an interrupted run promoted."""
    card = read_card(client, champion)
    client.delete_registered_model_alias(MODEL_NAME, CHALLENGER)
    if not card.rollout_history or card.rollout_history[-1].action != "promoted":
        _record(
            client,
            card,
            RolloutDecision(
                at=datetime.now(UTC), action="promoted", reason="completed an interrupted promotion"
            ),
        )


def apply_decision(
    client: MlflowClient,
    challenger: ModelVersion,
    champion: ModelVersion | None,
    gate: GateResult,
) -> str:
    """Move the aliases when the gate passed; record the decision in the cards either way and
    return its reason."""
    now = datetime.now(UTC)
    reason = gate.reason(first_champion=champion is None)
    if not gate.passed:
        _record(client, gate.card, RolloutDecision(at=now, action="kept", reason=reason))
        return reason
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, challenger.version)
    client.delete_registered_model_alias(MODEL_NAME, CHALLENGER)
    _record(client, gate.card, RolloutDecision(at=now, action="promoted", reason=reason))
    if champion is not None:
        _record(
            client,
            read_card(client, champion),
            RolloutDecision(at=now, action="replaced", reason=f"v{challenger.version} promoted"),
        )
    return reason
