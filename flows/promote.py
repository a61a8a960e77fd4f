"""Prefect flow `promote`: move `champion` to the challenger only through the gate
(flows/modeling/promotion.py); otherwise the aliases stay. Every decision goes into the cards.

Tasks: load_versions (who holds which alias) -> gate (the checks) -> decide (move the aliases
when every check passed; record the decision either way). When one version holds both aliases,
an earlier run promoted it and stopped before clearing challenger: finish_interrupted completes
that instead.

load_versions and gate only read the registry, the artifacts and the shadow log, so they retry.
decide and finish_interrupted move aliases and append to rollout histories, where a retry could
record a decision twice, so they do not retry; the next run finishes a promotion that stopped
between moving the two aliases.
"""

from typing import Literal

from mlflow.entities.model_registry import ModelVersion
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

from flows.modeling.gates import GateCheck
from flows.modeling.promotion import (
    Contenders,
    GateResult,
    apply_decision,
    finish_promotion,
    read_contenders,
    run_gate,
)
from service.scoring.model_names import CHALLENGER, CHAMPION
from service.settings import Settings
from service.tracking import registry_client


class PromoteReport(BaseModel):
    model_config = ConfigDict(coerce_numbers_to_str=True)  # MLflow numbers versions

    outcome: Literal["promoted", "kept", "nothing_to_do"]
    champion: str | None
    challenger: str | None
    checks: list[GateCheck]
    reason: str


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def load_versions(settings: Settings) -> Contenders:
    return read_contenders(registry_client(settings))


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10)
def gate(settings: Settings, challenger: ModelVersion, champion: ModelVersion | None) -> GateResult:
    return run_gate(settings, registry_client(settings), challenger, champion)


@task(cache_policy=NO_CACHE)
def finish_interrupted(settings: Settings, champion: ModelVersion) -> PromoteReport:
    finish_promotion(registry_client(settings), champion)
    return PromoteReport(
        outcome="promoted",
        champion=champion.version,
        challenger=None,
        checks=[],
        reason="completed an interrupted promotion",
    )


@task(cache_policy=NO_CACHE)
def decide(
    settings: Settings, challenger: ModelVersion, champion: ModelVersion | None, result: GateResult
) -> PromoteReport:
    logger = get_run_logger()
    reason = apply_decision(registry_client(settings), challenger, champion, result)
    if not result.passed:
        logger.info("v%s stays %s: %s", challenger.version, CHALLENGER, reason)
        return PromoteReport(
            outcome="kept",
            champion=champion.version if champion else None,
            challenger=challenger.version,
            checks=result.checks,
            reason=reason,
        )
    logger.info("v%s is now %s: %s", challenger.version, CHAMPION, reason)
    return PromoteReport(
        outcome="promoted",
        champion=challenger.version,
        challenger=None,
        checks=result.checks,
        reason=reason,
    )


@flow(name="promote")
def promote(settings: Settings | None = None) -> PromoteReport:
    settings = settings or Settings.from_env()
    contenders = load_versions(settings)
    challenger, champion = contenders.challenger, contenders.champion
    if challenger is None:
        report = PromoteReport(
            outcome="nothing_to_do",
            champion=champion.version if champion else None,
            challenger=None,
            checks=[],
            reason=f"no version holds {CHALLENGER}: train one with `tipml train`",
        )
        get_run_logger().info(report.reason)
        return report
    if champion is not None and champion.version == challenger.version:
        # A previous run moved champion and stopped before clearing challenger: finish it.
        return finish_interrupted(settings, champion)
    return decide(settings, challenger, champion, gate(settings, challenger, champion))


if __name__ == "__main__":
    promote()
