"""Prefect flow `promote`: move `champion` to the challenger only through the gate.

The challenger must pass the absolute checks (AUC over oracle AUC, calibration, fairness gap)
under the current policy and, when a champion exists, beat the champion's log loss on
validation rows neither model trained on and agree with it on shadow traffic (once there is
enough). Otherwise the aliases stay. Every decision goes into the cards.
"""

from datetime import UTC, datetime
from typing import Literal

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import log_loss

from flows.modeling.gates import POLICY, GateCheck, absolute_checks
from flows.modeling.model_card import Decision
from flows.modeling.registration import read_card, read_validation_rows, training_end, write_card
from flows.modeling.shadow_summary import read_summary, shadow_check
from service.scoring.model_inputs import MODEL_FEATURES
from service.scoring.model_names import CHALLENGER, CHAMPION, FEATURE_SERVICE_TAG, MODEL_NAME
from service.scoring.model_registry import version_by_alias
from service.settings import Settings
from service.tracking import registry_client


class PromoteReport(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)  # MLflow numbers versions

    outcome: Literal["promoted", "kept", "nothing_to_do"]
    champion: str | None
    challenger: str | None
    checks: list[GateCheck]
    reason: str


def _predict(version: ModelVersion, rows: pd.DataFrame) -> pd.Series:
    model = mlflow.sklearn.load_model(f"models:/{MODEL_NAME}/{version.version}")
    return model.predict_proba(rows[list(MODEL_FEATURES)])[:, 1]


def compare(client: MlflowClient, challenger: ModelVersion, champion: ModelVersion) -> GateCheck:
    """Challenger vs champion log loss on challenger validation rows the champion never saw."""
    name = "beats_champion"
    services = (challenger.tags.get(FEATURE_SERVICE_TAG), champion.tags.get(FEATURE_SERVICE_TAG))
    if services[0] != services[1]:
        return GateCheck(
            name=name,
            passed=False,
            detail=f"FeatureServices differ ({services[0]} vs {services[1]}): no common rows",
        )
    rows = read_validation_rows(client, challenger)
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


@flow(name="promote")
def promote(settings: Settings | None = None) -> PromoteReport:
    settings = settings or Settings.from_env()
    logger = get_run_logger()
    client = registry_client(settings)
    challenger = version_by_alias(client, CHALLENGER)
    champion = version_by_alias(client, CHAMPION)
    if challenger is None:
        report = PromoteReport(
            outcome="nothing_to_do",
            champion=champion.version if champion else None,
            challenger=None,
            checks=[],
            reason=f"no version holds {CHALLENGER}: train one with `tipml train`",
        )
        logger.info(report.reason)
        return report

    card = read_card(client, challenger)
    now = datetime.now(UTC)
    if champion is not None and champion.version == challenger.version:
        # A previous run moved champion and stopped before clearing challenger: finish it.
        client.delete_registered_model_alias(MODEL_NAME, CHALLENGER)
        if not card.rollout_history or card.rollout_history[-1].action != "promoted":
            card.rollout_history.append(
                Decision(at=now, action="promoted", reason="completed an interrupted promotion")
            )
            write_card(client, card)
        return PromoteReport(
            outcome="promoted",
            champion=champion.version,
            challenger=None,
            checks=[],
            reason="completed an interrupted promotion",
        )

    checks = absolute_checks(card.metrics, card.fairness)
    if champion is not None:
        checks.append(compare(client, challenger, champion))
        card.shadow = read_summary(settings, str(champion.version), str(challenger.version))
        checks.append(shadow_check(card.shadow))
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        card.rollout_history.append(Decision(at=now, action="kept", reason=reason))
        write_card(client, card)
        logger.info("v%s stays %s: %s", challenger.version, CHALLENGER, reason)
        return PromoteReport(
            outcome="kept",
            champion=champion.version if champion else None,
            challenger=challenger.version,
            checks=checks,
            reason=reason,
        )

    reason = "; ".join(c.detail for c in checks)
    if champion is None:
        reason = f"first champion; {reason}"
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, challenger.version)
    client.delete_registered_model_alias(MODEL_NAME, CHALLENGER)
    card.rollout_history.append(Decision(at=now, action="promoted", reason=reason))
    write_card(client, card)
    if champion is not None:
        old = read_card(client, champion)
        old.rollout_history.append(
            Decision(at=now, action="replaced", reason=f"v{challenger.version} promoted")
        )
        write_card(client, old)
    logger.info("v%s is now %s: %s", challenger.version, CHAMPION, reason)
    return PromoteReport(
        outcome="promoted",
        champion=challenger.version,
        challenger=None,
        checks=checks,
        reason=reason,
    )


if __name__ == "__main__":
    promote()
