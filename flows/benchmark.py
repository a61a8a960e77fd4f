"""Prefect flow `benchmark`: collect -> judge -> compare, on the tip benchmark (benchmark/).

With a judge configured the flow judges automatically and compares; without one it exports
the pending items as a judge file and stops there: `tipml bench judge apply FILE` and
`tipml bench compare` finish the job once a person has scored them.
"""

from pathlib import Path

from prefect import flow, get_run_logger, task
from pydantic import BaseModel, ConfigDict, Field

from benchmark.collect import CollectReport, collect
from benchmark.compare import CompareParams, compare
from benchmark.grid import CollectParams
from benchmark.judging import AutoJudgeParams, AutoJudgeReport, auto, export
from benchmark.report_models import CompareReport
from benchmark.rubric import DEFAULT_RUBRIC
from service.settings import Settings

OFFLINE_CANDIDATES = ("rules", "generic-baseline", "chatty-baseline")


class BenchmarkParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    collect: CollectParams = CollectParams(models=OFFLINE_CANDIDATES)
    judge: str | None = Field(
        default=None, description="judge model in benchmark/models.yaml; none = export, stop"
    )
    judge_repeats: int = Field(default=3, ge=1, le=10)
    judge_repeat_items: int = Field(default=10, ge=0)
    allow_same_family: bool = False
    rubric: str = DEFAULT_RUBRIC


class BenchmarkReport(BaseModel):
    collected: CollectReport
    judged: AutoJudgeReport | None
    judge_file: Path | None = Field(description="exported for a person to fill in, no judge")
    compared: CompareReport | None


@task(name="collect")
def collect_task(params: CollectParams, settings: Settings) -> CollectReport:
    return collect(params, settings)


@task(name="judge")
def judge_task(params: AutoJudgeParams, settings: Settings) -> AutoJudgeReport:
    return auto(params, settings)


@task(name="compare")
def compare_task(params: CompareParams, settings: Settings) -> CompareReport:
    return compare(params, settings)


@flow(name="benchmark")
def benchmark(
    params: BenchmarkParams | None = None, settings: Settings | None = None
) -> BenchmarkReport:
    params = params or BenchmarkParams()
    settings = settings or Settings.from_env()
    logger = get_run_logger()
    name = params.collect.benchmark
    collected = collect_task(params.collect, settings)
    logger.info(
        "collected %d of %d cells (%d LLM calls, %d cache hits, %d failed)",
        collected.collected,
        collected.cells,
        collected.llm_calls,
        collected.cache_hits,
        len(collected.failed),
    )
    if params.judge is None:
        exported = export(settings, name, params.rubric)
        logger.info("no judge configured: %d items exported to %s", exported.items, exported.path)
        return BenchmarkReport(
            collected=collected, judged=None, judge_file=exported.path, compared=None
        )
    judged = judge_task(
        AutoJudgeParams(
            judge=params.judge,
            benchmark=name,
            rubric=params.rubric,
            repeats=params.judge_repeats,
            repeat_items=params.judge_repeat_items,
            allow_same_family=params.allow_same_family,
        ),
        settings,
    )
    compared = compare_task(CompareParams(benchmark=name, rubric=params.rubric), settings)
    return BenchmarkReport(collected=collected, judged=judged, judge_file=None, compared=compared)


if __name__ == "__main__":
    benchmark()
