"""Phase A, collect: every (model, prompt version, scenario, sample) cell answered once.

The models are benchmark/models.py's, the scenarios benchmark/scenarios.py's, rendered by the
service's own prompt code. Model-major: all cells of one model run (up to `concurrency` at a
time) before the next model is called, so a local server holds one model at a time; Ollama
models are sent keep_alive=0. Every model passes the size guard before the first call of the
run. Each answer is cached by (model, params, prompt hash, scenario content, sample), so a
rerun, or the same grid in another benchmark, calls no model. Each cell becomes one MLflow run
(tags, prompt, candidate and raw response as artifacts, latency, tokens, cost) and one MLflow
trace (benchmark/traces.py), and then one ledger row (benchmark/store.py); a crash before the
ledger row leaves a run no cell points to, which the next collect deletes before it starts, so
a resumed collect has no duplicate cells. Traces, which MLflow exports in the background, are
settled after the last cell by one pass that deletes those no cell points to and traces the
cells that have none.

Before the first cell the released prompts are mirrored into MLflow's prompt registry
(benchmark/prompt_mirror.py), and each cell's run and trace link the version they used.
"""

import asyncio
import logging
import time

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.entities.model_registry import PromptVersion
from pydantic import BaseModel, Field
from rich.progress import Progress

from benchmark.grid import CollectParams, GridPoint, cell_id, digest, grid_points
from benchmark.models import ModelClient, ModelsConfig, check_size, model_size
from benchmark.prompt_mirror import mirror_prompts, run_link_tags
from benchmark.scenarios import load_scenario_set
from benchmark.store import BenchStore, Cell
from benchmark.traces import (
    CELL_TAG,
    TRACE_ID_TAG,
    CandidateInputs,
    TraceSync,
    record_candidate,
    sync_candidates,
)
from service.generation.prompts import check_output, prompt_hash, render
from service.settings import Settings
from service.tracking import experiment_id, registry_client

log = logging.getLogger(__name__)


class CollectReport(BaseModel):
    benchmark: str
    scenario_set: str
    scenario_set_hash: str
    cells: int = Field(description="cells in the grid")
    collected: int = Field(description="cells added by this run")
    already: int = Field(description="cells a previous run had collected")
    llm_calls: int
    cache_hits: int
    orphans_deleted: int = Field(description="MLflow runs of an interrupted collect")
    traces: TraceSync = Field(description="how the cells' MLflow traces were settled")
    prompts: dict[str, str] = Field(description="prompt version -> its MLflow prompt URI")
    failed: dict[str, str] = Field(description="cell -> error, for cells still missing")


def cache_key(client: ModelClient, point: GridPoint) -> str:
    return digest(
        client.litellm_model,
        client.cache_params(),
        prompt_hash(point.prompt_version),
        point.scenario.model_dump(mode="json"),
        point.sample,
    )


def delete_orphan_runs(mlflow: MlflowClient, experiment: str, store: BenchStore) -> int:
    """Delete this benchmark's cell runs that no ledger row points to (an interrupted collect)."""
    known = store.run_ids()
    orphans = [
        run.info.run_id
        for run in mlflow.search_runs(
            [experiment], filter_string=f"tags.{CELL_TAG} != ''", max_results=50_000
        )
        if run.info.run_id not in known
    ]
    for run_id in orphans:
        mlflow.delete_run(run_id)
    return len(orphans)


class Collector:
    def __init__(
        self,
        params: CollectParams,
        settings: Settings,
        config: ModelsConfig,
    ) -> None:
        self.params = params
        self.settings = settings
        self.config = config
        self.scenario_set = load_scenario_set(params.scenario_set)
        self.scenarios = self.scenario_set.select(list(params.scenarios))
        self.clients = {
            name: ModelClient(config.deployment(name), config.env_defaults, params.timeout_s)
            for name in params.models
        }
        self.store = BenchStore.of(settings)
        self.mlflow = registry_client(settings)
        self.prompts: dict[str, PromptVersion] = {}
        self.calls = self.hits = 0

    def check_sizes(self) -> None:
        """Refuse the whole run, before any call, if one model is too big or of unknown size."""
        for name, client in self.clients.items():
            size = model_size(client.deployment, client.params)
            check_size(name, size, self.params.allow_unknown_size)
            log.info("%s: %s parameters (%s)", name, size.billions, size.detail)

    async def _answer(self, client: ModelClient, point: GridPoint, messages: list[dict]) -> dict:
        key = cache_key(client, point)
        if (cached := self.store.cached(key)) is not None:
            self.hits += 1
            return cached | {"from_cache": True}
        self.calls += 1
        answer = await client.complete(messages)
        record = answer.model_dump()
        self.store.cache(key, client.litellm_model, record)
        return record | {"from_cache": False}

    def _record(
        self, experiment: str, point: GridPoint, cid: str, messages: list[dict], answer: dict
    ) -> None:
        client = self.clients[point.model]
        check = check_output(answer["text"])
        tags = {
            CELL_TAG: cid,
            "benchmark": self.params.benchmark,
            "model": point.model,
            "litellm_model": client.litellm_model,
            "prompt_version": point.prompt_version,
            "prompt_hash": prompt_hash(point.prompt_version),
            "scenario": point.scenario.id,
            "persona": point.scenario.persona,
            "scenario_set": self.scenario_set.id,
            "scenario_set_hash": self.scenario_set.content_hash,
            "sample": str(point.sample),
            "judge_pending": "true",
            "from_cache": str(answer["from_cache"]).lower(),
            **run_link_tags(self.prompts[point.prompt_version]),
        }
        run = self.mlflow.create_run(experiment, run_name=point.label(), tags=tags)
        run_id = run.info.run_id
        cell = Cell(
            cell_id=cid,
            benchmark=self.params.benchmark,
            model=point.model,
            litellm_model=client.litellm_model,
            prompt_version=point.prompt_version,
            prompt_hash=prompt_hash(point.prompt_version),
            scenario_set=self.scenario_set.id,
            scenario_set_hash=self.scenario_set.content_hash,
            scenario_id=point.scenario.id,
            sample=point.sample,
            params=client.cache_params(),
            text=check.text,
            format_ok=check.format_ok,
            overlong=check.overlong,
            latency_ms=answer["latency_ms"],
            prompt_tokens=answer["prompt_tokens"],
            completion_tokens=answer["completion_tokens"],
            cost_usd=answer["cost_usd"],
            from_cache=answer["from_cache"],
            run_id=run_id,
        )
        inputs = CandidateInputs(
            messages=messages,
            scenario_set=self.scenario_set.id,
            scenario_set_hash=self.scenario_set.content_hash,
            scenario=point.scenario,
        )
        trace_id = record_candidate(self.mlflow, experiment, cell, inputs)
        metrics = {
            "latency_ms": answer["latency_ms"],
            "format_ok": float(check.format_ok),
            "overlong": float(check.overlong),
            "chars": float(len(check.text)),
        }
        for name in ("prompt_tokens", "completion_tokens", "cost_usd"):
            if answer[name] is not None:
                metrics[name] = float(answer[name])
        now = int(time.time() * 1000)
        self.mlflow.log_batch(
            run_id,
            metrics=[Metric(name, value, now, 0) for name, value in metrics.items()],
            params=[Param(name, str(value)) for name, value in client.cache_params().items()],
            tags=[RunTag(TRACE_ID_TAG, trace_id)],
        )
        self.mlflow.log_dict(run_id, messages, "prompt.json")
        self.mlflow.log_text(run_id, check.text, "candidate.txt")
        self.mlflow.log_dict(run_id, answer["raw"], "response.json")
        self.mlflow.set_terminated(run_id)
        self.store.add_cell(cell)

    async def _model(
        self, experiment: str, model: str, done: set[str], failed: dict[str, str], bar: Progress
    ) -> int:
        client = self.clients[model]
        set_hash = self.scenario_set.content_hash
        grid = grid_points(self.params, self.scenarios, model)
        todo = [s for s in grid if cell_id(self.params.benchmark, set_hash, s) not in done]
        done_here = len(grid) - len(todo)
        task = bar.add_task(f"{model} ({done_here} collected before)", total=len(todo))
        gate = asyncio.Semaphore(self.params.concurrency)
        collected = 0

        async def one(point: GridPoint) -> None:
            nonlocal collected
            messages = render(point.prompt_version, point.scenario.prompt_context())
            async with gate:
                try:
                    answer = await self._answer(client, point, messages)
                except Exception as error:  # a provider failure is a missing cell, reported
                    failed[point.label()] = f"{type(error).__name__}: {error}"[:300]
                    bar.advance(task)
                    return
            self._record(
                experiment, point, cell_id(self.params.benchmark, set_hash, point), messages, answer
            )
            collected += 1
            bar.advance(task)

        await asyncio.gather(*(one(point) for point in todo))
        return collected

    async def run(self) -> CollectReport:
        self.check_sizes()
        experiment = experiment_id(self.mlflow, self.settings, self.params.benchmark)
        self.prompts = mirror_prompts(self.mlflow)
        orphans = delete_orphan_runs(self.mlflow, experiment, self.store)
        done = self.store.cell_ids()
        failed: dict[str, str] = {}
        collected = 0
        with Progress(transient=False) as bar:
            for model in self.params.models:
                collected += await self._model(experiment, model, done, failed, bar)
        traces = sync_candidates(
            self.mlflow, experiment, self.store.cells(self.params.benchmark), self.prompts
        )
        total = len(grid_points(self.params, self.scenarios))
        return CollectReport(
            benchmark=self.params.benchmark,
            scenario_set=self.scenario_set.id,
            scenario_set_hash=self.scenario_set.content_hash,
            cells=total,
            collected=collected,
            already=total - collected - len(failed),
            llm_calls=self.calls,
            cache_hits=self.hits,
            orphans_deleted=orphans,
            traces=traces,
            prompts={version: prompt.uri for version, prompt in self.prompts.items()},
            failed=failed,
        )


def collect(
    params: CollectParams, settings: Settings, config: ModelsConfig | None = None
) -> CollectReport:
    collector = Collector(params, settings, config or ModelsConfig.from_yaml())
    try:
        return asyncio.run(collector.run())
    finally:
        collector.store.close()
