"""Candidates and judgments as MLflow traces and assessments, for people to browse in MLflow.

Each ledger cell has one trace in its benchmark's experiment. Its inputs are the rendered prompt
messages and the scenario, its output the tip; tags name the cell (model, prompt version,
scenario, sample), root span attributes say its latency, tokens and cost. Its source run is the
cell's run, and it links the MLflow copy of its prompt version (benchmark/prompt_mirror.py).
Each judgment becomes feedback assessments on that trace, one per criterion and one for the
composite, with the judge as source and the rubric version and hash in the metadata.

The ledger (benchmark/store.py) stays the record and MLflow the mirror, kept by two idempotent
passes. MLflow exports a trace asynchronously and only best effort, and a crash can fall
between a cell's trace and its ledger row, so `sync_candidates`, which collect runs after its
last cell, makes the experiment agree with the ledger: it deletes a cell trace whose cell id and
source run match no ledger cell, gives a cell with no trace one, and links the prompt where that
link is missing. Matching by source run, not by a trace id in the ledger, lets a lost trace be
recreated without rewriting its ledger row. `mirror_judgments` logs only the assessments a
trace lacks, keyed by (name, judge, rubric version, repeat), so repeating it adds nothing.

MLflow's tracer, its assessment logging and its prompt linking write to MLflow's current
tracking URI, not to a client's: each function here refuses a client on another URI (see
service/tracking.py `registry_client`, which makes its client's URI the current one), so that
no trace lands in a store the ledger does not mirror.
"""

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress

import mlflow
from mlflow import MlflowClient
from mlflow.entities import AssessmentSource, AssessmentSourceType, SpanType, TraceInfo
from mlflow.entities.model_registry import PromptVersion
from mlflow.tracing.constant import (
    SpanAttributeKey,
    TokenUsageKey,
    TraceMetadataKey,
    TraceTagKey,
)
from pydantic import BaseModel, ConfigDict, Field

from benchmark.prompt_mirror import HASH_TAG
from benchmark.rubric import Rubric
from benchmark.scenarios import Scenario, ScenarioSet, load_scenario_set
from benchmark.store import Cell, JudgeBatch, Judgment
from service.generation.prompts import PROMPTS, prompt_hash, render

log = logging.getLogger(__name__)

CELL_TAG = "cell_id"  # on a cell's run and on its trace
TRACE_ID_TAG = "trace_id"  # on a cell's run: its trace
SOURCE_TYPES: Mapping[str, str] = {
    "human": AssessmentSourceType.HUMAN,
    "llm": AssessmentSourceType.LLM_JUDGE,
    "rules": AssessmentSourceType.CODE,
}
_PAGE = 500

Messages = list[dict[str, str]]


class CandidateInputs(BaseModel):
    """A cell trace's inputs: what the model was sent, and the scenario it was rendered from."""

    model_config = ConfigDict(frozen=True)

    messages: Messages
    scenario_set: str
    scenario_set_hash: str
    scenario: Scenario


class TraceSync(BaseModel):
    """What `sync_candidates` changed to make the experiment's cell traces the ledger's."""

    deleted: int = Field(description="traces of no ledger cell: an interrupted collect's")
    recreated: int = Field(description="cells whose trace was missing, traced again")
    linked: int = Field(description="traces given their prompt version link")
    untraced: list[str] = Field(
        description="cells left without a trace: their scenario set or prompt changed since"
    )


def _require_current(client: MlflowClient) -> None:
    if client.tracking_uri != mlflow.get_tracking_uri():
        raise RuntimeError(
            f"MLflow's current tracking URI is {mlflow.get_tracking_uri()}, the client's "
            f"{client.tracking_uri}: traces would go to the former"
        )


def record_candidate(
    client: MlflowClient, experiment_id: str, cell: Cell, inputs: CandidateInputs
) -> str:
    """Trace `cell` (whose run must exist) and return the trace id. MLflow exports the trace
    in the background: it is in the store only after a flush, which `sync_candidates` does."""
    _require_current(client)
    attributes: dict[str, object] = {
        "latency_ms": cell.latency_ms,
        "format_ok": cell.format_ok,
        "overlong": cell.overlong,
        "from_cache": cell.from_cache,
        "params": cell.params,
    }
    usage = {"prompt_tokens": cell.prompt_tokens, "completion_tokens": cell.completion_tokens}
    attributes |= {name: count for name, count in usage.items() if count is not None}
    if cell.prompt_tokens is not None and cell.completion_tokens is not None:
        # MLflow's own key: the UI shows it, and totals it per trace.
        attributes[SpanAttributeKey.CHAT_USAGE] = {
            TokenUsageKey.INPUT_TOKENS: cell.prompt_tokens,
            TokenUsageKey.OUTPUT_TOKENS: cell.completion_tokens,
            TokenUsageKey.TOTAL_TOKENS: cell.prompt_tokens + cell.completion_tokens,
        }
    if cell.cost_usd is not None:
        attributes["cost_usd"] = cell.cost_usd
    tags = {
        CELL_TAG: cell.cell_id,
        "benchmark": cell.benchmark,
        "model": cell.model,
        "litellm_model": cell.litellm_model,
        "prompt_version": cell.prompt_version,
        "prompt_hash": cell.prompt_hash,
        "scenario": cell.scenario_id,
        "scenario_set": cell.scenario_set,
        "scenario_set_hash": cell.scenario_set_hash,
        "sample": str(cell.sample),
    }
    # The span lasts the call's latency, so MLflow's duration column is the model's.
    end_ns = time.time_ns()
    root = client.start_trace(
        f"{cell.model}|{cell.prompt_version}|{cell.scenario_id}#{cell.sample}",
        span_type=SpanType.LLM,
        inputs=inputs.model_dump(mode="json"),
        attributes=attributes,
        tags=tags,
        experiment_id=experiment_id,
        start_time_ns=end_ns - round(cell.latency_ms * 1_000_000),
        run_id=cell.run_id,
    )
    client.end_trace(root.trace_id, outputs=cell.text, end_time_ns=end_ns)
    return root.trace_id


def _cell_trace_infos(client: MlflowClient, experiment_id: str) -> Iterator[TraceInfo]:
    token = None
    while True:
        page = client.search_traces(
            locations=[experiment_id], max_results=_PAGE, page_token=token, include_spans=False
        )
        yield from (trace.info for trace in page if CELL_TAG in trace.info.tags)
        token = page.token
        if not token:
            return


def _cell_traces(
    client: MlflowClient, experiment_id: str, cells: Sequence[Cell]
) -> tuple[dict[str, TraceInfo], list[str]]:
    """Each cell's trace by cell id, and the ids of the experiment's other cell traces.

    A cell's trace is the oldest tagged with its id whose source run is its run: a trace of the
    same cell from an interrupted collect has that collect's run, which no ledger row names.
    """
    run_of = {cell.cell_id: cell.run_id for cell in cells}
    found: dict[str, TraceInfo] = {}
    strays = []
    infos = sorted(
        _cell_trace_infos(client, experiment_id), key=lambda i: (i.request_time, i.trace_id)
    )
    for info in infos:
        cell_id = info.tags[CELL_TAG]
        source_run = info.trace_metadata.get(TraceMetadataKey.SOURCE_RUN)
        if cell_id in run_of and run_of[cell_id] == source_run and cell_id not in found:
            found[cell_id] = info
        else:
            strays.append(info.trace_id)
    return found, strays


def _recorded_inputs(
    cell: Cell, scenario_sets: Mapping[str, ScenarioSet]
) -> CandidateInputs | None:
    """The inputs `cell` was answered with, if the code still has its scenario and its prompt
    at the hashes the ledger recorded; None when either changed since."""
    scenario_set = scenario_sets.get(cell.scenario_set)
    if (
        scenario_set is None
        or scenario_set.content_hash != cell.scenario_set_hash
        or cell.prompt_version not in PROMPTS
        or prompt_hash(cell.prompt_version) != cell.prompt_hash
    ):
        return None
    scenario = next((s for s in scenario_set.scenarios if s.id == cell.scenario_id), None)
    if scenario is None:
        return None
    return CandidateInputs(
        messages=render(cell.prompt_version, scenario.prompt_context()),
        scenario_set=cell.scenario_set,
        scenario_set_hash=cell.scenario_set_hash,
        scenario=scenario,
    )


def sync_candidates(
    client: MlflowClient,
    experiment_id: str,
    cells: Sequence[Cell],
    prompts: Mapping[str, PromptVersion],
) -> TraceSync:
    """Make `experiment_id`'s cell traces exactly one per cell of `cells` (a benchmark's whole
    ledger), each linked to its prompt in `prompts` (by service version name). Safe to repeat.

    Waits for MLflow's background export first, so that a trace recorded in this process is
    found, not recreated; a collect interrupted in another process exports nothing more.
    """
    _require_current(client)
    mlflow.flush_trace_async_logging()
    found, strays = _cell_traces(client, experiment_id, cells)
    if strays:
        client.delete_traces(experiment_id, trace_ids=strays)
    sets = {}
    for set_id in {cell.scenario_set for cell in cells if cell.cell_id not in found}:
        with suppress(ValueError):  # a set no longer shipped: its cells stay untraced
            sets[set_id] = load_scenario_set(set_id)
    to_link = [
        (cell, found[cell.cell_id].trace_id)
        for cell in cells
        if cell.cell_id in found and TraceTagKey.LINKED_PROMPTS not in found[cell.cell_id].tags
    ]
    recreated, untraced = 0, []
    for cell in cells:
        if cell.cell_id in found:
            continue
        inputs = _recorded_inputs(cell, sets)
        if inputs is None:
            untraced.append(cell.cell_id)
            continue
        trace_id = record_candidate(client, experiment_id, cell, inputs)
        client.set_tag(cell.run_id, TRACE_ID_TAG, trace_id)
        to_link.append((cell, trace_id))
        recreated += 1
    if recreated:
        mlflow.flush_trace_async_logging()
    linked = 0
    for cell, trace_id in to_link:
        prompt = prompts.get(cell.prompt_version)
        # A link says which text produced the tip: only to a copy of the text the cell used.
        if prompt is not None and prompt.tags.get(HASH_TAG) == cell.prompt_hash:
            client.link_prompt_versions_to_trace([prompt], trace_id)
            linked += 1
    if untraced:
        log.warning(
            "%d cells have no MLflow trace: their scenario set or prompt changed since they "
            "were collected",
            len(untraced),
        )
    return TraceSync(deleted=len(strays), recreated=recreated, linked=linked, untraced=untraced)


def mirror_judgments(
    client: MlflowClient,
    experiment_id: str,
    cells: Sequence[Cell],
    judgments: Sequence[Judgment],
    batches: Mapping[tuple[str, str, int], JudgeBatch],
    rubric: Rubric,
) -> int:
    """Log each judgment of a cell of `cells` on `rubric` as feedback on the cell's trace: one
    per criterion and one for the composite (format_ok and overlong from the cell). `batches`
    gives each judgment's batch by (cell_id, judge, repeat): the judge's kind makes the
    source type. Returns the assessments logged; those a trace has already are skipped.
    """
    _require_current(client)
    traces, _ = _cell_traces(client, experiment_id, cells)
    cell_of = {cell.cell_id: cell for cell in cells}
    logged = 0
    untraced = set()
    for judgment in judgments:
        cell = cell_of.get(judgment.cell_id)
        if cell is None or judgment.rubric_version != rubric.version:
            continue
        info = traces.get(cell.cell_id)
        if info is None:
            untraced.add(cell.cell_id)
            continue
        # An assessment is one judgment's score by name: (name, judge, rubric version, repeat).
        present = {
            (a.name, a.source.source_id, a.metadata.get("rubric_version"), a.metadata.get("repeat"))
            for a in info.assessments
            if a.metadata
        }
        batch = batches[(judgment.cell_id, judgment.judge, judgment.repeat)]
        scores = {name: getattr(judgment, name) for name in rubric.criteria}
        values = scores | {"composite": rubric.composite(scores, cell.format_ok, cell.overlong)}
        for name, value in values.items():
            if (name, judgment.judge, rubric.version, str(judgment.repeat)) in present:
                continue
            mlflow.log_feedback(
                trace_id=info.trace_id,
                name=name,
                value=value,
                source=AssessmentSource(
                    source_type=SOURCE_TYPES[batch.judge_kind], source_id=judgment.judge
                ),
                metadata={
                    "rubric_version": rubric.version,
                    "rubric_hash": batch.rubric_hash,
                    "repeat": str(judgment.repeat),
                    "judge_kind": batch.judge_kind,
                    "batch_id": batch.batch_id,
                },
            )
            logged += 1
    if untraced:
        log.warning(
            "%d judged cells have no MLflow trace to hold their assessments; a collect of the "
            "benchmark traces them again",
            len(untraced),
        )
    return logged
