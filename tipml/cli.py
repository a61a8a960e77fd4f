"""`tipml`: one command line for the simulator, the feature platform and the flows.

Arguments are validated by the same pydantic models the flows take, before anything runs, so
a bad argument names itself and writes nothing.
"""

import json
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.scorer_versions import LATEST
from service.scoring.model_names import Alias
from service.settings import Settings
from service.tracking import registry_client
from tipml.benchmark_cli import bench_app
from tipml.cli_support import console, err, fail, settings_of, settings_options, validated
from tipml.consume_cli import consume
from tipml.events_cli import events_app
from tipml.experiments_cli import experiments_app

if TYPE_CHECKING:
    from flows.featurestore.show_online import OnlineShow

app = typer.Typer(no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
features_app = typer.Typer(no_args_is_help=True, help="Compute, inspect and export features.")
app.add_typer(features_app, name="features")
app.add_typer(bench_app, name="bench")
app.add_typer(experiments_app, name="experiments")
app.add_typer(events_app, name="events")
app.command("consume")(consume)
# Commands that may run on a home whose events are still JSON lines: every other one refuses.
REPLACES_OR_IMPORTS_EVENTS = frozenset({"events", "simulate"})


@app.callback()
@settings_options
def main(ctx: typer.Context, **settings: Any) -> None:
    ctx.obj = validated(Settings, **settings)
    if ctx.invoked_subcommand not in REPLACES_OR_IMPORTS_EVENTS:
        from service.events.lake import legacy_jsonl

        if message := legacy_jsonl(ctx.obj):
            fail(message, code=1)


@app.command()
def simulate(
    ctx: typer.Context,
    users: Annotated[int, typer.Option(help="Number of simulated users.")],
    days: Annotated[int, typer.Option(help="Days of history.")],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same world.")],
    end: Annotated[
        str | None, typer.Option(help="First UTC day after the world (default: today).")
    ] = None,
    reset: Annotated[bool, typer.Option(help="Replace an existing world and its stores.")] = False,
    shards: Annotated[
        int, typer.Option(help="User shards, each its own task (the same world for any count).")
    ] = 1,
) -> None:
    """Simulate users, tasks, tips and reactions into the event log."""
    from flows.simulate import SimulateParams, WorldExistsError
    from flows.simulate import simulate as simulate_flow

    params = validated(
        SimulateParams, users=users, days=days, seed=seed, end=end, reset=reset, shards=shards
    )
    try:
        report = simulate_flow(params, settings_of(ctx))
    except WorldExistsError as exc:
        fail(str(exc), code=1)
    console.print(
        f"simulated {report.users} users, {report.events} events, "
        f"{report.start:%Y-%m-%d} .. {report.end:%Y-%m-%d}"
    )


@features_app.command("run")
def features_run(
    ctx: typer.Context,
    as_of: Annotated[
        str | None, typer.Option(help="Compute and materialize up to this ISO time (default: now).")
    ] = None,
    overlap_days: Annotated[int, typer.Option(help="Days recomputed for late events.")] = 2,
    chunk_size: Annotated[int, typer.Option(help="Users per online-store write.")] = 5000,
    shards: Annotated[
        int, typer.Option(help="User shards, each its own task (a new count recomputes all).")
    ] = 1,
    full: Annotated[bool, typer.Option(help="Recompute every day.")] = False,
) -> None:
    """Run the `features` flow: events -> daily profiles -> offline table -> online store."""
    from flows.features import FeaturesParams
    from flows.features import features as features_flow

    params = validated(
        FeaturesParams,
        as_of=as_of,
        overlap_days=overlap_days,
        chunk_size=chunk_size,
        full=full,
        shards=shards,
    )
    report = features_flow(params, settings_of(ctx))
    done, update = report.materialized, report.profiles
    console.print(
        f"{update.mode} run ({update.reason}): {update.rows_written} profile rows for "
        f"{len(update.days_computed)} days from {update.events_read} events; "
        f"{done.users} users materialized up to {done.end:%Y-%m-%d %H:%M}"
    )


@features_app.command("export-contract")
def export_contract(
    check: Annotated[
        bool, typer.Option(help="Only check that the file is current; exit 1 if not.")
    ] = False,
) -> None:
    """Write feature_repo/contracts/profile_features.json from PROFILE_FEATURES."""
    from feature_repo.contract import CONTRACT_PATH, contract_mismatches, export_contract
    from feature_repo.feature_views import user_profile

    if check:
        if not CONTRACT_PATH.exists():
            fail(f"{CONTRACT_PATH} is missing: run `tipml features export-contract`", 1)
        problems = contract_mismatches(json.loads(CONTRACT_PATH.read_text()), user_profile)
        if problems:
            fail(f"{CONTRACT_PATH} disagrees with the table: " + "; ".join(problems), 1)
        console.print(f"{CONTRACT_PATH} agrees with PROFILE_FEATURES")
        return
    console.print(f"wrote {export_contract()}")


@features_app.command("show")
def show(
    ctx: typer.Context,
    user_ids: Annotated[list[str], typer.Argument(help="Users to show.")],
    at: Annotated[str | None, typer.Option(help="Read as of this ISO time (default: now).")] = None,
    feature_service: Annotated[
        str | None,
        typer.Option(help="The scorer version to read (default: the champion's, as /score)."),
    ] = None,
) -> None:
    """Print what serving reads for users: online profile (TTL, fallbacks) and context."""
    from flows.featurestore.show_online import OnlineShowParams, read_online
    from service.scoring.model_registry import ModelRejected

    params = validated(OnlineShowParams, user_ids=user_ids, at=at, feature_service=feature_service)
    try:
        print_reads(read_online(settings_of(ctx), params))
    except ModelRejected as exc:
        fail(f"the champion cannot serve, so nothing reads its features: {exc}", code=1)


def print_reads(show: "OnlineShow") -> None:
    reads = show.reads
    table = Table(title=f"online features through {show.feature_service}; fallbacks say why")
    table.add_column("feature", no_wrap=True)
    for user_id in reads:
        table.add_column(user_id, justify="right")
    first = next(iter(reads.values()))
    for name in [*first.profile, *first.context]:
        cells = []
        for read in reads.values():
            value = read.profile.get(name, read.context.get(name))
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            reason = read.fallbacks.get(name)
            cells.append(f"{text} ({reason})" if reason else text)
        table.add_row(name, *cells)
    as_of = (f"{r.as_of:%Y-%m-%d %H:%M}" if r.as_of else "-" for r in reads.values())
    table.add_row("profile_as_of", *as_of)
    console.print(table)


@app.command()
def train(
    ctx: typer.Context,
    as_of: Annotated[
        str | None, typer.Option(help="Train on what was known at this ISO time (default: now).")
    ] = None,
    validation_days: Annotated[int, typer.Option(help="Latest days held out.")] = 7,
    history_days: Annotated[
        int, typer.Option(help="Days of impressions read (training and validation).")
    ] = 90,
    min_rows: Annotated[int, typer.Option(help="Minimum impressions per split.")] = 1000,
    shards: Annotated[
        int,
        typer.Option(help="User shards whose training rows are built as separate tasks."),
    ] = 1,
    user_sample: Annotated[
        float,
        typer.Option(help="Train on this fraction of users, chosen by user hash (0 < f <= 1)."),
    ] = 1.0,
    feature_service: Annotated[
        str,
        typer.Option(help="The scorer version to train (feature_repo/scorer_versions.py)."),
    ] = LATEST,
) -> None:
    """Run the `training` flow: train, evaluate and register tip-scorer@challenger."""
    from flows.modeling.training_set import NotEnoughData
    from flows.training import TrainParams
    from flows.training import training as training_flow

    params = validated(
        TrainParams,
        as_of=as_of,
        validation_days=validation_days,
        history_days=history_days,
        min_rows=min_rows,
        shards=shards,
        user_sample=user_sample,
        feature_service=feature_service,
    )
    try:
        report = training_flow(params, settings_of(ctx))
    except NotEnoughData as exc:
        fail(str(exc), code=1)
    print_training(report)


def print_training(report) -> None:
    m, ceiling = report.metrics, report.ceiling_fit_seconds
    console.print(
        f"tip-scorer v{report.version} ({report.model_type}) registered as challenger\n"
        f"{m.discrimination()}\n"
        f"log loss {m.log_loss:.4f}; ECE {m.ece:.4f}\n"
        f"training set built in {report.build_seconds:.1f} s ({report.train_rows} training rows);"
        f" fit in {report.fit_seconds:.1f} s"
        + ("" if ceiling is None else f"; ceiling model fit in {ceiling:.1f} s"),
        markup=False,
    )


@app.command()
def promote(ctx: typer.Context) -> None:
    """Run the `promote` flow: challenger -> champion only through the gate."""
    from flows.promote import promote as promote_flow

    report = promote_flow(settings_of(ctx))
    console.print(f"{report.outcome}: {report.reason}")
    for check in report.checks:
        console.print(f"  {'pass' if check.passed else 'FAIL'} {check.name}: {check.detail}")


@app.command()
def bento(ctx: typer.Context) -> None:
    """Import the champion into BentoML's model store and build a Bento that carries it.

    Prints the Bento's tag last, alone on its line: serve it with `bentoml serve <tag>`, which
    needs no MLflow. BentoML's store is BENTOML_HOME (default ~/bentoml).
    """
    from flows.bento import NoChampion, package_champion

    try:
        packaged = package_champion(settings_of(ctx))
    except NoChampion as exc:
        fail(str(exc), code=1)
    console.print(
        f"tip-scorer v{packaged.mlflow_version} is {packaged.model} in BentoML's model store; "
        "serve the Bento below with `bentoml serve <tag>`",
        markup=False,
    )
    console.print(packaged.bento, markup=False, soft_wrap=True)


@app.command()
def card(
    ctx: typer.Context,
    alias: Annotated[Alias, typer.Option(help="Which version's card.")] = Alias.CHAMPION,
    markdown: Annotated[bool, typer.Option(help="Print the whole card as markdown.")] = False,
) -> None:
    """Print the model card of the version holding an alias."""
    from flows.modeling.registration import read_card
    from service.scoring.model_registry import version_by_alias

    client = registry_client(settings_of(ctx))
    version = version_by_alias(client, alias.value)
    if version is None:
        fail(f"no tip-scorer version holds the alias {alias.value!r}", code=1)
    model_card = read_card(client, version)
    console.print(model_card.to_markdown() if markdown else model_card.summary(), markup=False)


@app.command()
def demo(
    ctx: typer.Context,
    users: Annotated[int, typer.Option(help="Simulated users.")] = 500,
    days: Annotated[int, typer.Option(help="Days of history.")] = 35,
    seed: Annotated[int, typer.Option(help="World seed.")] = 42,
) -> None:
    """The main job on the embedded default: simulate -> features -> train -> promote."""
    from flows.demo import DemoParams
    from flows.demo import demo as demo_flow

    params = validated(DemoParams, users=users, days=days, seed=seed)
    result = demo_flow(params, settings_of(ctx))
    console.print(
        f"world: {result.simulated.users} users, {result.simulated.events} events; "
        f"features: {result.features.profiles.rows_written} rows, "
        f"{result.features.materialized.users} users online"
    )
    print_reads(result.reads)
    console.print(f"at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n")
    print_training(result.trained)
    console.print(f"promote: {result.promoted.outcome}: {result.promoted.reason}", markup=False)
    console.print("\nexperiment report (the world's uniformly random prompt versions):")
    console.print(result.experiments.summary(), markup=False, highlight=False, soft_wrap=True)
    console.print("\noff-policy estimate of a candidate policy before switching it on:")
    console.print(result.candidate_policy.summary(), markup=False, highlight=False, soft_wrap=True)
    if result.champion_card is None:
        console.print("no champion: the service needs one, so the demo stops here")
        return
    console.print("\nchampion model card (summary):", markup=False)
    console.print(result.champion_card.summary(), markup=False)
    service_demo(settings_of(ctx))


def service_demo(settings: Settings) -> None:
    """Start `bentoml serve`, send one /score and one /generate, print both, stop it."""
    import httpx

    from flows.featurestore.show_online import latest_contexts
    from service.access import caller_headers
    from service.events.lake import open_lake
    from tipml.serving import bentoml_serve

    user_id = "u000001"
    logged = latest_contexts(open_lake(settings), {user_id}).get(user_id)
    context = {"timestamp": datetime.now(UTC).isoformat(), "timezone": "UTC", "tasks": []}
    if logged is not None:
        context |= logged.model_dump(mode="json", include={"timezone", "tasks"})
    candidates = [
        {"tip_id": f"tip-{category}", "category": category} for category in TIP_CATEGORIES
    ]
    headers = caller_headers()  # the token the service is started with, when one is set
    console.print("\nstarting bentoml serve service.service:TipService ...")
    with bentoml_serve(settings, settings.data_dir / "demo-serve.log") as url:
        for path, body in (
            ("/score", {"user_id": user_id, "candidates": candidates, "context": context}),
            # Through the bandit: the policy picks the prompt version and logs the decision.
            ("/generate", {"user_id": user_id, "context": context, "experiment": "prompt-bandit"}),
        ):
            response = httpx.post(f"{url}{path}", json=body, headers=headers, timeout=30)
            console.print(f"POST {path} -> {response.status_code}")
            console.print_json(response.text)
    console.print("service stopped")


# What Prefect raises when its ephemeral API server did not answer in time (prefect/server/api).
PREFECT_DID_NOT_START = "Timed out while attempting to connect to ephemeral Prefect API server"


def run() -> None:
    """The `tipml` command: `app`, with a Prefect server that would not start explained."""
    try:
        app()
    except RuntimeError as exc:
        if PREFECT_DID_NOT_START not in str(exc):
            raise
        err.print(
            "error: Prefect's temporary API server did not start in time "
            f"(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, here "
            f"{os.environ.get('PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS')} s). On a busy "
            "machine give it longer, e.g. PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=300, "
            "or start a server once (`prefect server start`) and point PREFECT_API_URL at it "
            "(http://127.0.0.1:4200/api).",
            markup=False,
            highlight=False,
        )
        raise SystemExit(1) from None
