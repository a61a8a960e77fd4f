"""`tipml experiments`: the prompt-experiment report, and off-policy evaluation of a candidate
policy on the decision log before it is switched on."""

from datetime import date
from typing import Annotated

import typer
from pydantic import BaseModel, ConfigDict

from feature_repo.bounds import UtcDatetime
from service.api.prompt_versions import RELEASED_PROMPT_VERSIONS
from service.api.request import Id
from tipml.cli_support import console, fail, settings_of, validated

experiments_app = typer.Typer(
    no_args_is_help=True, help="Prompt experiments: reports and off-policy evaluation."
)

# Of released versions, so that the example in --help runs as typed.
_EXAMPLE_POLICY = f"{RELEASED_PROMPT_VERSIONS[-1]}=0.8,{RELEASED_PROMPT_VERSIONS[0]}=0.2"
AsOfOption = Annotated[
    str | None,
    typer.Option(help="ISO 8601 time to report as of; naive means UTC (default: now)."),
]
SinceOption = Annotated[
    str | None,
    typer.Option(help="Read the decision log from this UTC day, YYYY-MM-DD (default: all)."),
]


class ReportOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    as_of: UtcDatetime | None = None
    experiment: Id | None = None
    since: date | None = None


def _policy_pairs(text: str) -> dict[str, str]:
    """'v3-few-shot=0.8,v1=0.2' -> {'v3-few-shot': '0.8', 'v1': '0.2'}; numbers checked later."""
    pairs: dict[str, str] = {}
    for part in (p.strip() for p in text.split(",")):
        arm, sep, value = part.partition("=")
        arm = arm.strip()
        if not sep or not arm:
            fail(f"--policy: expected arm=probability pairs separated by commas, got {part!r}")
        if arm in pairs:
            fail(f"--policy: {arm} is given twice")
        pairs[arm] = value.strip()
    return pairs


@experiments_app.command("report")
def report_command(
    ctx: typer.Context,
    as_of: AsOfOption = None,
    experiment: Annotated[
        str | None, typer.Option(help="Only this experiment id (default: every one logged).")
    ] = None,
    since: SinceOption = None,
) -> None:
    """Per experiment and arm: accept rates, sequential tests vs control, SRM, guardrails.

    Control and limits as service/experiments/experiments.yaml sets them and the bandit update
    enforces.
    """
    from flows.experiments.report import experiment_report
    from flows.experiments.rewards import ExperimentNotLogged

    options = validated(ReportOptions, as_of=as_of, experiment=experiment, since=since)
    try:
        report = experiment_report(
            settings_of(ctx),
            as_of=options.as_of,
            experiment=options.experiment,
            since=options.since,
        )
    except ExperimentNotLogged as exc:
        fail(f"--experiment: {exc}")
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)


@experiments_app.command("ope")
def ope_command(
    ctx: typer.Context,
    experiment: Annotated[str, typer.Option(help="Experiment id whose decision log to use.")],
    policy: Annotated[
        str,
        typer.Option(help=f"Candidate as arm=probability pairs, e.g. '{_EXAMPLE_POLICY}'."),
    ],
    as_of: AsOfOption = None,
    since: SinceOption = None,
) -> None:
    """Estimate a candidate policy's accept rate from the decisions another policy logged."""
    from flows.experiments.ope import OpeParams, UnknownArms, UnsupportedArms, evaluate_policy
    from flows.experiments.rewards import ExperimentNotLogged

    options = validated(
        OpeParams, experiment=experiment, policy=_policy_pairs(policy), as_of=as_of, since=since
    )
    try:
        report = evaluate_policy(
            settings_of(ctx), options.experiment, options.policy, options.as_of, options.since
        )
    except ExperimentNotLogged as exc:
        fail(f"--experiment: {exc}")
    except (UnknownArms, UnsupportedArms) as exc:
        fail(f"--policy: {exc}")
    except ValueError as exc:
        fail(str(exc), code=1)
    console.print(report.summary(), markup=False, highlight=False, soft_wrap=True)
