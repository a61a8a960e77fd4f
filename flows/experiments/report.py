"""The prompt-experiment report: per experiment and arm, what users did with the tips.

For every experiment in the decision log up to `as_of`: per arm (prompt version) the decisions,
settled impressions, pending tips, accept rate with a Wilson interval, dismiss rate, an always-valid
mSPRT comparison against the control arm, the guardrails, and one sample-ratio-mismatch check. Each
experiment's report JSON and a plot of the cumulative accept rate per arm go to an MLflow run in
experiment "tip-experiments". Rewards come from flows/experiments/rewards.py and the statistics from
flows/experiments/stats.py; this module only reads, arranges and writes.

Guardrails and control are those of service/experiments/experiments.yaml for an experiment
configured there, else `Guardrails()` and control "v1" when the experiment has that arm (the
simulated world's "world-uniform" is not configured). Guardrails are judged as the bandit_update
flow judges them, with the same rule on the decisions of the lookback window before `as_of`, so the
report shows the verdicts the flow acts on: "PAUSE" for an arm the flow pauses (or has paused,
keeping its first reason).
"""

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow import MlflowClient
from mlflow.entities import Metric
from pydantic import BaseModel, ConfigDict

from flows.experiments.rewards import decision_rewards, experiment_rows
from flows.experiments.stats import (
    ALPHA,
    BURN_IN,
    TAU,
    GuardrailResult,
    Interval,
    SequentialTest,
    SrmResult,
    evaluate_guardrails,
    guardrail_window,
    msprt,
    sample_ratio_mismatch,
    wilson_bounds,
    wilson_interval,
)
from service.api.prompt_versions import DEFAULT_PROMPT_VERSION
from service.events.lake import open_lake
from service.experiments.config import Experiment, ExperimentsConfig, Guardrails
from service.settings import Settings
from service.tracking import REPORT_EXPERIMENT, experiment_id, registry_client

DEFAULT_CONTROL = DEFAULT_PROMPT_VERSION
PLOT_FILE = "accept_rate.png"
REPORT_FILE = "report.json"


class ArmStats(BaseModel):
    model_config = ConfigDict(frozen=True)

    arm: str
    decisions: int
    errors: int  # decisions whose LLM call produced no tip
    impressions: int  # settled tips: feedback came or the attribution window closed
    pending: int  # shown tips still inside the window with no feedback
    accepted: int
    accept_rate: float | None
    accept_ci: Interval  # Wilson 95%
    dismiss_rate: float | None
    comparison: SequentialTest | None  # against control; None for control itself
    # Over the guardrail lookback window; None when the arm has no decision in it.
    guardrail: GuardrailResult | None


class ExperimentResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    experiment: str
    control: str | None  # None: no arm named as control and no "v1", so nothing compared
    limits: Guardrails  # what every arm's guardrail was judged against
    decisions: int
    first_decision: datetime
    last_decision: datetime
    arms: list[ArmStats]
    srm: SrmResult
    run_id: str | None = None
    plot_uri: str | None = None


class ExperimentReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    as_of: datetime
    experiments: list[ExperimentResult]

    def summary(self) -> str:
        """A few plain lines per experiment, for a terminal."""
        stamp = f"{self.as_of.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        if not self.experiments:
            return f"no experiment decisions before {stamp}"
        lines = []
        for e in self.experiments:
            pending = sum(a.pending for a in e.arms)
            errors = sum(a.errors for a in e.arms)
            lines.append(
                f"{e.experiment} as of {stamp}, control {e.control or '(none)'}: "
                f"{e.decisions} decisions, {pending} pending, {errors} errors; SRM {e.srm.detail}"
            )
            width = max(len(a.arm) for a in e.arms)
            lines += [f"  {_arm_line(a, e.control, width)}" for a in e.arms]
            lines.append(f"  guardrails {_limits_line(e.limits)}")
            for a in e.arms:
                if a.guardrail is not None and a.guardrail.breaches:
                    verdict = "PAUSE" if a.guardrail.action == "pause" else "control over limit"
                    lines.append(f"  {verdict} {a.arm}: {'; '.join(a.guardrail.breaches)}")
            if e.plot_uri:
                lines.append(f"  plot: {e.plot_uri}")
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _limits_line(limits: Guardrails) -> str:
    checks = [
        f"{name} <= {limit:g}{unit}"
        for name, limit, unit in (
            ("dismiss rate", limits.max_dismiss_rate, ""),
            ("LLM error rate", limits.max_llm_error_rate, ""),
            ("p95 latency", limits.max_p95_latency_ms, " ms"),
        )
        if limit is not None
    ]
    # The dismiss rate counts settled impressions towards min_decisions, the others decisions.
    window = f"last {limits.lookback_days} days, min {limits.min_decisions} decisions/impressions"
    return f"({window}): {', '.join(checks) or 'no limits'}"


def _arm_line(a: ArmStats, control: str | None, width: int) -> str:
    line = (
        f"{a.arm:<{width}} {a.decisions:>6} dec {a.impressions:>6} imp  "
        f"accept {_pct(a.accept_rate):>6} [{100 * a.accept_ci.low:.1f}, "
        f"{100 * a.accept_ci.high:.1f}]  dismiss {_pct(a.dismiss_rate):>6}"
    )
    c = a.comparison
    if c is not None and c.difference is not None:
        line += (
            f"  vs {control} {100 * c.difference:+.1f} pts [{100 * c.ci.low:+.1f}, "
            f"{100 * c.ci.high:+.1f}] p={c.p_value:.3g}" + (" significant" if c.significant else "")
        )
    return line


def _comparison(
    settled: pd.DataFrame, arm: str, control: str, tau: float, alpha: float
) -> SequentialTest:
    """mSPRT of `arm` vs `control` in the order their rewards became known."""
    pair = settled[settled["arm"].isin([arm, control])]
    pair = pair.sort_values(["settled_at", "timestamp"], kind="stable")
    return msprt(
        (pair["arm"] == arm).to_numpy(),
        pair["reward"].to_numpy(dtype=float),
        tau=tau,
        alpha=alpha,
    )


def analyze_experiment(
    rows: pd.DataFrame,
    control: str | None,
    limits: Guardrails,
    *,
    as_of: datetime | None = None,
    tau: float = TAU,
    alpha: float = ALPHA,
) -> ExperimentResult:
    """One experiment's decisions (flows.experiments.rewards output) -> its result, without I/O.

    Guardrails are judged on the decisions of the lookback window before `as_of` (on every
    decision when `as_of` is None).
    """
    experiment = str(rows["experiment"].iloc[0])
    arms = sorted(rows["arm"].unique())
    if control is not None and control not in arms:
        raise ValueError(
            f"control {control!r} is not an arm of experiment {experiment!r}: {', '.join(arms)}"
        )
    settled = rows[rows["settled"]]
    judged = rows if as_of is None else guardrail_window(rows, limits, as_of)
    guardrails = evaluate_guardrails(judged, limits, control)
    stats = []
    for arm in arms:
        mine = rows[rows["arm"] == arm]
        scored = settled[settled["arm"] == arm]
        accepted = int(scored["reward"].sum())
        impressions = len(scored)
        stats.append(
            ArmStats(
                arm=arm,
                decisions=len(mine),
                errors=int((~mine["shown"]).sum()),
                impressions=impressions,
                pending=int((mine["shown"] & ~mine["settled"]).sum()),
                accepted=accepted,
                accept_rate=accepted / impressions if impressions else None,
                accept_ci=wilson_interval(accepted, impressions),
                dismiss_rate=float(scored["dismissed"].mean()) if impressions else None,
                comparison=(
                    _comparison(settled, arm, control, tau, alpha)
                    if control is not None and arm != control
                    else None
                ),
                guardrail=guardrails.get(arm),
            )
        )
    return ExperimentResult(
        experiment=experiment,
        control=control,
        limits=limits,
        decisions=len(rows),
        first_decision=rows["timestamp"].min().to_pydatetime(),
        last_decision=rows["timestamp"].max().to_pydatetime(),
        arms=stats,
        srm=sample_ratio_mismatch(rows),
    )


def accept_rate_figure(rows: pd.DataFrame, title: str) -> Figure:
    """Cumulative accept rate per arm as rewards settled, with pointwise Wilson 95% bands."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    settled = rows[rows["settled"]].sort_values(["settled_at", "timestamp"], kind="stable")
    for arm, part in settled.groupby("arm", sort=True):
        n = np.arange(1, len(part) + 1)
        accepted = np.cumsum(part["reward"].to_numpy(dtype=float))
        low, high = wilson_bounds(accepted, n)
        when = part["settled_at"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
        # The first few rates swing over the whole axis and flatten everything after them.
        start = min(BURN_IN, len(part)) - 1
        (line,) = ax.plot(when[start:], (accepted / n)[start:], label=str(arm), linewidth=1.2)
        ax.fill_between(
            when[start:], low[start:], high[start:], color=line.get_color(), alpha=0.15, lw=0
        )
    ax.set_title(title)
    ax.set_xlabel("reward settled (UTC)")
    ax.set_ylabel(f"cumulative accept rate (from the {BURN_IN}th tip)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right")
    fig.autofmt_xdate()
    return fig


def _metrics(result: ExperimentResult) -> dict[str, float]:
    metrics = {"decisions": float(result.decisions)}
    if result.srm.p_value is not None:
        metrics["srm_p_value"] = result.srm.p_value
    for a in result.arms:
        metrics[f"{a.arm}.impressions"] = float(a.impressions)
        metrics[f"{a.arm}.pending"] = float(a.pending)
        if a.guardrail is not None:
            metrics[f"{a.arm}.llm_error_rate"] = a.guardrail.llm_error_rate
        if a.accept_rate is not None:
            metrics[f"{a.arm}.accept_rate"] = a.accept_rate
        if a.comparison is not None:
            metrics[f"{a.arm}.p_value"] = a.comparison.p_value
    return metrics


def _log_run(
    client: MlflowClient,
    settings: Settings,
    result: ExperimentResult,
    rows: pd.DataFrame,
    as_of: datetime,
) -> ExperimentResult:
    run = client.create_run(
        experiment_id(client, settings, REPORT_EXPERIMENT),
        run_name=f"{result.experiment}-{as_of.astimezone(UTC):%Y%m%dT%H%M%SZ}",
        tags={"experiment": result.experiment, "as_of": as_of.isoformat()},
    )
    run_id = run.info.run_id
    try:
        result = result.model_copy(
            update={"run_id": run_id, "plot_uri": f"{run.info.artifact_uri}/{PLOT_FILE}"}
        )
        now = int(datetime.now(UTC).timestamp() * 1000)
        client.log_batch(
            run_id, metrics=[Metric(k, v, now, 0) for k, v in _metrics(result).items()]
        )
        title = f"{result.experiment} as of {as_of.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
        client.log_figure(run_id, accept_rate_figure(rows, title), PLOT_FILE)
        client.log_text(run_id, result.model_dump_json(indent=2), REPORT_FILE)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return result


def experiment_setup(
    configured: Experiment | None, arms: set[str]
) -> tuple[Guardrails, str | None]:
    """The guardrails and control of an experiment whose logged decisions chose `arms`.

    A configured experiment (service/experiments/experiments.yaml) has its own; any other gets
    `Guardrails()` and DEFAULT_CONTROL. The control is None when it never got a decision:
    there is nothing to compare against.
    """
    if configured is None:
        limits, control = Guardrails(), DEFAULT_CONTROL
    else:
        limits, control = configured.guardrails, configured.control
    return limits, control if control in arms else None


def experiment_report(
    settings: Settings,
    as_of: datetime | None = None,
    guardrails: dict[str, Guardrails] | None = None,
    controls: dict[str, str] | None = None,
    experiment: str | None = None,
    since: date | None = None,
) -> ExperimentReport:
    """Report every experiment in the decision log (or only `experiment`) as of `as_of`,
    from UTC day `since` (default: all of the log).

    `guardrails` and `controls` are keyed by experiment id and override, per experiment, the
    defaults of `experiment_setup`.
    """
    as_of = as_of or datetime.now(UTC)
    frame = decision_rewards(open_lake(settings), as_of, since)
    if experiment is not None:
        frame = experiment_rows(frame, experiment)
    guardrails = guardrails or {}
    controls = controls or {}
    configured = {e.id: e for e in ExperimentsConfig.from_yaml().experiments}
    analyzed = []
    for name, rows in frame.groupby("experiment", sort=True):
        limits, control = experiment_setup(configured.get(name), set(rows["arm"]))
        result = analyze_experiment(
            rows,
            controls.get(name, control),
            guardrails.get(name, limits),
            as_of=as_of,
        )
        analyzed.append((result, rows))
    results = []
    if analyzed:
        client = registry_client(settings)
        results = [_log_run(client, settings, result, rows, as_of) for result, rows in analyzed]
    return ExperimentReport(as_of=as_of, experiments=results)
