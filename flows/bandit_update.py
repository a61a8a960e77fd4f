"""Prefect flow `bandit_update`: count the rewards of logged decisions into the bandit state.

Decisions and their rewards are read through flows/experiments/rewards.py `decision_rewards`,
the one rule the experiment report and OPE use too: the first reaction to the decision's tip
within ATTRIBUTION_WINDOW, accepted = 1, dismissed or ignored = 0, and no reaction = 0 once the
window has closed; until then the decision is pending and left for a later run. A decision whose
request failed (outcome "error") showed no tip and has no reward; it only counts against the arm's
guardrails. Each experiment's rewards go to the state store in one batch, which skips tip ids
counted before, so runs may overlap and repeat.

Guardrails are flows/experiments/stats.py `evaluate_guardrails`, the rule `tipml experiments
report` shows, on every arm's decisions of the experiment's lookback window: the dismiss rate
among settled shown tips (judged from `min_decisions` of them), the share of requests with
outcome "error" and the p95 latency (judged from `min_decisions` decisions). An arm over a
limit is paused in the same batch; an arm paused before keeps its first reason. The control is
never paused, so traffic always has somewhere to go.

Each batch moves the experiment's watermark to its oldest pending decision (to the run's
start when none is pending): every decision before it is settled. The next run reads the log
from a day before the earliest watermark (the day covers late appends; the stores skip the
tip ids read again) or from the start of the lookback window, whichever is earlier.

The flow returns a BanditUpdateReport with one ExperimentUpdate per experiment: what this run
counted, and per arm the posterior and the guardrail measures.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.experiments.rewards import decision_rewards
from flows.experiments.stats import GuardrailResult, evaluate_guardrails, guardrail_window
from service.events.lake import open_lake
from service.experiments.bandit_state import (
    Applied,
    Batch,
    ExperimentState,
    Reward,
    open_bandit_store,
)
from service.experiments.config import Experiment, ExperimentsConfig
from service.settings import Settings

LATE_APPEND_MARGIN = timedelta(days=1)


class ArmReport(BaseModel):
    arm: str
    alpha: int
    beta: int
    mean: float
    exposures: int
    rewards: int
    pause_reason: str | None
    # Over the guardrail lookback window; None where there was nothing to measure.
    decisions: int
    dismiss_rate: float | None
    llm_error_rate: float | None
    p95_latency_ms: float | None


class ExperimentUpdate(BaseModel):
    experiment: str
    revision: int
    counted: int
    already_counted: int
    pending: int
    paused: list[str]
    newly_paused: dict[str, str]
    arms: list[ArmReport]


class BanditUpdateReport(BaseModel):
    as_of: datetime
    experiments: list[ExperimentUpdate]


@dataclass(frozen=True)
class _Tally:
    rewards: list[Reward]
    pending: int
    watermark: datetime  # every decision before it is settled
    guardrails: dict[str, GuardrailResult]  # over the lookback window; arms with decisions


def _tally(experiment: Experiment, frame: pd.DataFrame, now: datetime) -> _Tally:
    """Rewards, pending decisions and guardrail verdicts of one experiment's decisions.

    `frame` is flows/experiments/rewards.py `decision_rewards` as of `now`: the one reward rule.
    """
    rows = frame[(frame["experiment"] == experiment.id) & frame["arm"].isin(experiment.arms)]
    settled = rows[rows["settled"]]
    pending = rows[rows["shown"] & ~rows["settled"]]
    oldest = pending["timestamp"].min()
    limits = experiment.guardrails
    return _Tally(
        rewards=[
            Reward(tip_id=tip, arm=arm, reward=int(reward))
            for tip, arm, reward in settled[["tip_id", "arm", "reward"]].itertuples(index=False)
        ],
        pending=len(pending),
        # With nothing pending, every decision logged before now is settled.
        watermark=now if pd.isna(oldest) else oldest.to_pydatetime(),
        guardrails=evaluate_guardrails(
            guardrail_window(rows, limits, now), limits, experiment.control
        ),
    )


def _pauses(experiment: Experiment, state: ExperimentState, counts: _Tally) -> dict[str, str]:
    """Arms to pause now, with why: live non-control arms that evaluate_guardrails pauses."""
    return {
        arm: f"{'; '.join(result.breaches)} over {result.decisions} decisions "
        f"in {experiment.guardrails.lookback_days} days"
        for arm, result in counts.guardrails.items()
        if result.action == "pause" and arm != experiment.control and not state.arm(arm).paused
    }


def _read_start(
    experiments: tuple[Experiment, ...], states: dict[str, ExperimentState], now: datetime
) -> datetime | None:
    starts = []
    for experiment in experiments:
        watermark = states[experiment.id].watermark
        if watermark is None:
            return None  # never counted: read the whole log
        lookback = now - timedelta(days=experiment.guardrails.lookback_days)
        starts.append(min(watermark - LATE_APPEND_MARGIN, lookback))
    return min(starts, default=None)


@flow(name="bandit_update")
def bandit_update(settings: Settings | None = None) -> BanditUpdateReport:
    settings = settings or Settings.from_env()
    logger = get_run_logger()
    now = datetime.now(UTC)
    config = ExperimentsConfig.from_yaml()
    store = open_bandit_store(settings)
    states = {e.id: store.read(e.id) for e in config.experiments}
    start = _read_start(config.experiments, states, now)

    frame = decision_rewards(
        open_lake(settings),
        now,
        start=start.date() if start else None,
        experiments=states.keys(),
    )

    updates = []
    for experiment in config.experiments:
        counts = _tally(experiment, frame, now)
        pauses = _pauses(experiment, states[experiment.id], counts)
        applied = store.apply(
            Batch(
                experiment=experiment.id,
                rewards=tuple(counts.rewards),
                pauses=pauses,
                watermark=counts.watermark,
            )
        )
        for arm, reason in pauses.items():
            logger.warning("%s: paused arm %s: %s", experiment.id, arm, reason)
        update = _update(experiment, applied, counts, pauses)
        logger.info(
            "%s r%d: counted %d (%d counted before), %d pending; posterior means %s",
            experiment.id,
            update.revision,
            update.counted,
            update.already_counted,
            update.pending,
            {a.arm: round(a.mean, 4) for a in update.arms},
        )
        updates.append(update)
    return BanditUpdateReport(as_of=now, experiments=updates)


def _update(
    experiment: Experiment, applied: Applied, counts: _Tally, pauses: dict[str, str]
) -> ExperimentUpdate:
    state = applied.state
    arms = []
    for arm in experiment.arms:
        posterior, guardrail = state.arm(arm), counts.guardrails.get(arm)
        arms.append(
            ArmReport(
                arm=arm,
                alpha=posterior.alpha,
                beta=posterior.beta,
                mean=posterior.mean,
                exposures=posterior.exposures,
                rewards=posterior.rewards,
                pause_reason=posterior.pause_reason,
                decisions=guardrail.decisions if guardrail else 0,
                dismiss_rate=guardrail.dismiss_rate if guardrail else None,
                llm_error_rate=guardrail.llm_error_rate if guardrail else None,
                p95_latency_ms=guardrail.p95_latency_ms if guardrail else None,
            )
        )
    return ExperimentUpdate(
        experiment=experiment.id,
        revision=state.revision,
        counted=applied.counted,
        already_counted=applied.duplicates,
        pending=counts.pending,
        paused=[a.arm for a in arms if a.pause_reason is not None],
        newly_paused=pauses,
        arms=arms,
    )


if __name__ == "__main__":
    bandit_update()
