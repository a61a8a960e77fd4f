"""`tipml bench`: the tip benchmark's phases, one command each, and the whole flow."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from benchmark.rubric import DEFAULT_RUBRIC
from service.tracking import BENCHMARK_EXPERIMENT
from tipml.cli_support import console, fail, settings_of, validated

if TYPE_CHECKING:  # the phases are imported by the commands that run them, for a quick start
    from benchmark.grid import CollectParams
    from benchmark.report_models import CompareReport

bench_app = typer.Typer(no_args_is_help=True, help="The tip benchmark: collect, judge, compare.")
judge_app = typer.Typer(no_args_is_help=True, help="Score collected cells on the rubric.")
bench_app.add_typer(judge_app, name="judge")


def _names(value: str | None) -> tuple[str, ...] | None:
    """'a,b' -> ('a', 'b'); options take comma-separated lists."""
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip())


@bench_app.command("collect")
def collect_command(
    ctx: typer.Context,
    models: Annotated[str, typer.Option(help="Comma-separated names from benchmark/models.yaml.")],
    prompts: Annotated[
        str | None, typer.Option(help="Comma-separated prompt versions (default: all).")
    ] = None,
    scenario_set: Annotated[str | None, typer.Option(help="Scenario set id.")] = None,
    scenarios: Annotated[
        str | None, typer.Option(help="Comma-separated scenario ids (default: the whole set).")
    ] = None,
    samples: Annotated[int | None, typer.Option(help="Answers per cell.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Calls in flight per model.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per call.")] = None,
    allow_unknown_size: Annotated[
        bool, typer.Option(help="Run models whose parameter count cannot be found.")
    ] = False,
    benchmark: Annotated[str | None, typer.Option(help="Benchmark (MLflow experiment).")] = None,
    detect: Annotated[
        float | None,
        typer.Option(
            min=0.01,
            help="Composite difference this run must detect at 80% power, each cell against "
            "the best; checked, and the design it needs printed, before any LLM call.",
        ),
    ] = None,
) -> None:
    """Phase A: answer every (model, prompt, scenario, sample) cell not collected yet."""
    from benchmark.grid import CollectParams, left_to_collect
    from benchmark.scenarios import load_scenario_set
    from benchmark.store import BenchStore

    params = validated(
        CollectParams,
        models=_names(models),
        prompts=_names(prompts),
        scenario_set=scenario_set,
        scenarios=_names(scenarios),
        samples=samples,
        concurrency=concurrency,
        timeout_s=timeout,
        allow_unknown_size=allow_unknown_size,
        benchmark=benchmark,
    )
    settings = settings_of(ctx)
    try:
        scenario_set = load_scenario_set(params.scenario_set)
        selected = scenario_set.select(list(params.scenarios))
    except ValueError as exc:
        fail(str(exc))
    if detect is not None:
        _check_detect(params, len(selected), detect)
    store = BenchStore.of(settings)
    try:
        left = left_to_collect(params, scenario_set, store)
    finally:
        store.close()
    if not left:  # no model to size or call, no run to write: LiteLLM and MLflow stay unloaded
        console.print(
            f"{params.benchmark}: every cell of {scenario_set.id} is collected; nothing to do",
            markup=False,
        )
        return

    from benchmark.collect import collect
    from benchmark.models import ModelRefused

    try:
        report = collect(params, settings)
    except ModelRefused as exc:
        fail(f"size guard: {exc}")
    except ValueError as exc:
        fail(str(exc))
    console.print(
        f"{report.benchmark}: {report.cells} cells on {report.scenario_set} "
        f"({report.scenario_set_hash[:12]}): {report.collected} collected, {report.already} "
        f"already there; {report.llm_calls} LLM calls, {report.cache_hits} cache hits"
        + (
            f", {report.orphans_deleted} runs of an interrupted collect deleted"
            if report.orphans_deleted
            else ""
        ),
        markup=False,
    )
    for cell, error in report.failed.items():
        console.print(f"  FAILED {cell}: {error}", markup=False)
    if report.failed:
        raise typer.Exit(1)


def _check_detect(params: "CollectParams", scenarios: int, detect: float) -> None:
    """Refuse, before any call, a design that cannot detect `detect` when each cell is tested
    against the best (compare's default family); say which design would."""
    from benchmark.grid import MAX_SAMPLES
    from benchmark.power import check_design

    cells = len(params.models) * len(params.prompts)
    try:
        check = check_design(
            detect,
            scenarios=scenarios,
            samples=params.samples,
            max_scenarios=scenarios,
            max_samples=MAX_SAMPLES,
            comparisons=max(cells - 1, 1),
        )
    except ValueError as exc:  # inf passes typer's minimum
        fail(f"--detect: {exc}")
    found = "nothing" if check.mde is None else f"{check.mde:.2f}"
    console.print(
        f"{scenarios} scenarios x {params.samples} samples, {cells} cells: detects {found} "
        f"at 80% power (asked: {detect:g}); cheapest: {check.cheapest.reason}",
        markup=False,
    )
    if not check.enough:
        fail(
            "this design cannot detect the difference asked for; nothing collected. Pass "
            "--samples, or a larger --scenario-set (tip-scenarios-v2)"
        )


@judge_app.command("export")
def judge_export(
    ctx: typer.Context,
    benchmark: Annotated[
        str, typer.Option(help="Benchmark (MLflow experiment).")
    ] = BENCHMARK_EXPERIMENT,
    rubric: Annotated[str, typer.Option(help="Rubric version.")] = DEFAULT_RUBRIC,
    out: Annotated[Path | None, typer.Option(help="Where to write the judge file.")] = None,
) -> None:
    """Write the cells pending judgment, with the rubric, as one JSON file to fill in."""
    from benchmark.judging import export

    try:
        given = {"benchmark": benchmark, "rubric_version": rubric, "path": out}
        report = export(settings_of(ctx), **{k: v for k, v in given.items() if v is not None})
    except ValueError as exc:
        fail(str(exc), code=1)
    console.print(
        f"{report.items} items -> {report.path}\nschema: {report.schema_path}\n"
        "fill in `judge` and every item's `scores`, then: tipml bench judge apply FILE",
        markup=False,
    )


@judge_app.command("apply")
def judge_apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A filled judge file.")],
) -> None:
    """Validate a filled judge file and apply all of it, or nothing."""
    from benchmark.judging import JudgeRejected, apply_file

    try:
        report = apply_file(settings_of(ctx), file)
    except JudgeRejected as exc:
        fail(str(exc), code=1)
    console.print(
        f"applied {report.applied} judgments by {report.judge} on {report.rubric_version} "
        f"(batch {report.batch_id}); {report.mirrored_runs} MLflow runs updated",
        markup=False,
    )


@judge_app.command("auto")
def judge_auto(
    ctx: typer.Context,
    judge: Annotated[str, typer.Option(help="Judge model from benchmark/models.yaml.")],
    benchmark: Annotated[str | None, typer.Option(help="Benchmark (MLflow experiment).")] = None,
    rubric: Annotated[str | None, typer.Option(help="Rubric version.")] = None,
    repeats: Annotated[int | None, typer.Option(help="Judgments per re-judged item.")] = None,
    repeat_items: Annotated[int | None, typer.Option(help="Items judged --repeats times.")] = None,
    allow_same_family: Annotated[
        bool, typer.Option(help="Let the judge score candidates of its own model family.")
    ] = False,
    concurrency: Annotated[int | None, typer.Option(help="Calls in flight.")] = None,
) -> None:
    """Judge pending cells with a model at temperature 0, answers as validated JSON."""
    from benchmark.judging import AutoJudgeParams, JudgeRejected, auto

    params = validated(
        AutoJudgeParams,
        judge=judge,
        benchmark=benchmark,
        rubric=rubric,
        repeats=repeats,
        repeat_items=repeat_items,
        allow_same_family=allow_same_family,
        concurrency=concurrency,
    )
    try:
        report = auto(params, settings_of(ctx))
    except (JudgeRejected, ValueError) as exc:
        fail(str(exc), code=1)
    console.print(
        f"{report.judge} ({report.family}): {report.judgments} judgments on {report.items} items;"
        f" {report.unparseable} unparseable answers, {report.call_failures} failed calls "
        f"(neither counted as a score)",
        markup=False,
    )


@bench_app.command("compare")
def compare_command(
    ctx: typer.Context,
    benchmark: Annotated[str | None, typer.Option(help="Benchmark (MLflow experiment).")] = None,
    rubric: Annotated[str | None, typer.Option(help="Rubric version.")] = None,
    judges: Annotated[
        str | None, typer.Option(help="Comma-separated judges (default: all).")
    ] = None,
    control: Annotated[
        str | None,
        typer.Option(help="Cell model|prompt every other cell is tested against (default: best)."),
    ] = None,
    pairs: Annotated[
        str | None,
        typer.Option(help="best: each cell against the control (default); all: every pair."),
    ] = None,
) -> None:
    """Phase C: leaderboard with intervals, paired tests, rank stability, HTML and PNG."""
    from benchmark.compare import CompareParams, compare

    params = validated(
        CompareParams,
        benchmark=benchmark,
        rubric=rubric,
        judges=_names(judges),
        control=control,
        pairs=pairs,
    )
    try:
        report = compare(params, settings_of(ctx))
    except ValueError as exc:
        fail(str(exc), code=1)
    print_leaderboard(report)
    print_tests(report)
    console.print(f"report: {report.html_path}\nchart:  {report.png_path}", markup=False)


def print_tests(report: "CompareReport") -> None:
    from rich.table import Table

    from benchmark.report import mde_text

    table = Table(
        title=f"paired tests, Holm within each family; significant: p_holm <= {report.alpha:g};"
        f" MDE: difference detectable with {report.power:.0%} power"
    )
    for column in ("family", "a", "b", "diff (a - b)", "p_holm", "significant", "MDE"):
        table.add_column(column)
    for test in report.pairs:
        table.add_row(
            test.family,
            test.a,
            test.b,
            "n/a" if test.mean_diff is None else f"{test.mean_diff:.2f}",
            f"{test.p_holm:.3g}",
            "yes" if test.significant else "no",
            mde_text(test),
        )
    console.print(table)


def print_leaderboard(report: "CompareReport") -> None:
    from rich.table import Table

    table = Table(title="leaderboard (mean composite, 95% CI clustered by scenario)")
    for column in ("model", "prompt", "composite", "95% CI", "format ok", "n"):
        table.add_column(column)
    for row in report.leaderboard:
        table.add_row(
            row.model,
            row.prompt_version,
            f"{row.mean:.2f}",
            f"{row.low:.2f} - {row.high:.2f}",
            f"{row.format_ok_rate:.0%}",
            str(row.n_items),
        )
    console.print(table)
