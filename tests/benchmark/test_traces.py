"""The benchmark in MLflow's GenAI terms, on a real SQLite tracking store in a tmp home:
candidates as traces, judgments as assessments, the released prompts in the prompt registry."""

import json

import mlflow
import pytest
from mlflow.entities import AssessmentSourceType
from mlflow.tracing.constant import SpanAttributeKey, TraceMetadataKey, TraceTagKey

from benchmark.collect import collect
from benchmark.grid import CollectParams
from benchmark.judging import AutoJudgeParams, apply_file, auto, export, mirror_to_mlflow
from benchmark.prompt_mirror import (
    HASH_TAG,
    PROMPT_NAME,
    VERSION_TAG,
    PromptMirrorConflict,
    chat_template,
    mirror_prompts,
    prompt_mirror_problems,
    run_link_tags,
)
from benchmark.rubric import load_rubric
from benchmark.scenarios import load_scenario_set
from benchmark.store import BenchStore, JudgeBatch, Judgment
from benchmark.traces import CELL_TAG, TRACE_ID_TAG, CandidateInputs, record_candidate
from service.generation.prompts import PROMPTS, prompt_hash, render
from service.settings import Settings
from service.tracking import BENCHMARK_EXPERIMENT, registry_client

MODELS = ("rules", "generic-baseline")
SCENARIOS = ("student-late-night", "manager-morning")
CELLS = len(MODELS) * len(PROMPTS) * len(SCENARIOS)
CRITERIA = ("relevance", "actionability", "tone")


def grid() -> CollectParams:
    return CollectParams(models=MODELS, scenarios=SCENARIOS)


def traces_of(settings: Settings) -> dict[str, mlflow.entities.Trace]:
    """The benchmark's traces by their cell id. registry_client first: it makes the settings'
    store MLflow's current one, which the fluent search reads, whatever a test before set."""
    client = registry_client(settings)
    experiment = client.get_experiment_by_name(BENCHMARK_EXPERIMENT).experiment_id
    traces = mlflow.search_traces(locations=[experiment], return_type="list")
    by_cell = {trace.info.tags[CELL_TAG]: trace for trace in traces}
    assert len(by_cell) == len(traces), "two traces of one cell"
    return by_cell


def linked(tags: dict[str, str]) -> list[dict[str, str]]:
    return json.loads(tags[TraceTagKey.LINKED_PROMPTS])


def feedback(trace: mlflow.entities.Trace) -> dict[tuple[str, str, str], object]:
    """(name, judge, repeat) -> value of each assessment on `trace`; duplicates fail."""
    found = {}
    for a in trace.info.assessments:
        key = (a.name, a.source.source_id, a.metadata["repeat"])
        assert key not in found, f"assessment {key} logged twice"
        found[key] = a.value
    return found


@pytest.fixture
def collected(settings: Settings) -> Settings:
    assert collect(grid(), settings).collected == CELLS
    return settings


# --- candidates as traces ---------------------------------------------------------------------


def test_each_cell_is_one_trace_of_its_prompt_scenario_and_tip_linked_to_its_prompt(collected):
    cells = BenchStore.of(collected).cells(BENCHMARK_EXPERIMENT)
    traces = traces_of(collected)
    assert traces.keys() == {c.cell_id for c in cells}
    client = registry_client(collected)
    numbers = {v: p.version for v, p in mirror_prompts(client).items()}
    scenarios = {s.id: s for s in load_scenario_set().scenarios}
    for cell in cells:
        trace = traces[cell.cell_id]
        span = trace.data.spans[0]
        scenario = scenarios[cell.scenario_id]
        assert span.inputs == CandidateInputs(
            messages=render(cell.prompt_version, scenario.prompt_context()),
            scenario_set=cell.scenario_set,
            scenario_set_hash=cell.scenario_set_hash,
            scenario=scenario,
        ).model_dump(mode="json")
        assert span.inputs["scenario"]["id"] == cell.scenario_id
        assert span.outputs == cell.text
        tags = trace.info.tags
        assert (tags["model"], tags["prompt_version"]) == (cell.model, cell.prompt_version)
        assert tags["prompt_hash"] == cell.prompt_hash and tags["sample"] == str(cell.sample)
        assert span.attributes["latency_ms"] == cell.latency_ms
        assert span.attributes.get("cost_usd") == cell.cost_usd
        assert span.attributes[SpanAttributeKey.CHAT_USAGE]["input_tokens"] == cell.prompt_tokens
        assert trace.info.execution_duration == pytest.approx(cell.latency_ms, abs=1)
        # The run and the trace name each other, and link the prompt version that was sent.
        run = client.get_run(cell.run_id)
        assert trace.info.trace_metadata[TraceMetadataKey.SOURCE_RUN] == cell.run_id
        assert run.data.tags[TRACE_ID_TAG] == trace.info.trace_id
        prompt = [{"name": PROMPT_NAME, "version": str(numbers[cell.prompt_version])}]
        assert linked(tags) == linked(run.data.tags) == prompt


def test_a_resumed_collect_leaves_exactly_one_trace_per_cell(collected):
    """What an interrupted collect leaves: a cell's trace whose run the ledger never named
    (killed before the ledger row, then collected again), a trace of a cell the ledger never
    got, and a ledger cell whose trace MLflow's background export lost."""
    client = registry_client(collected)
    experiment = client.get_experiment_by_name(BENCHMARK_EXPERIMENT).experiment_id
    cells = BenchStore.of(collected).cells(BENCHMARK_EXPERIMENT)
    lost = cells[1]
    client.delete_traces(experiment, trace_ids=[traces_of(collected)[lost.cell_id].info.trace_id])
    scenario = next(s for s in load_scenario_set().scenarios if s.id == cells[0].scenario_id)
    inputs = CandidateInputs(
        messages=render(cells[0].prompt_version, scenario.prompt_context()),
        scenario_set=cells[0].scenario_set,
        scenario_set_hash=cells[0].scenario_set_hash,
        scenario=scenario,
    )
    for cell_id in (cells[0].cell_id, "never-in-the-ledger"):
        interrupted = client.create_run(experiment, tags={CELL_TAG: cell_id}).info.run_id
        stray = cells[0].model_copy(update={"cell_id": cell_id, "run_id": interrupted})
        record_candidate(client, experiment, stray, inputs)

    report = collect(grid(), collected)
    assert (report.collected, report.orphans_deleted) == (0, 2)
    assert (report.traces.deleted, report.traces.recreated, report.traces.untraced) == (2, 1, [])
    traces = traces_of(collected)
    assert traces.keys() == {c.cell_id for c in cells}
    for cell in cells:
        assert traces[cell.cell_id].info.trace_metadata[TraceMetadataKey.SOURCE_RUN] == cell.run_id
    again = traces[lost.cell_id]
    assert again.data.spans[0].outputs == lost.text and linked(again.info.tags)
    assert client.get_run(lost.run_id).data.tags[TRACE_ID_TAG] == again.info.trace_id

    settled = collect(grid(), collected).traces
    assert (settled.deleted, settled.recreated, settled.linked) == (0, 0, 0)


# --- judgments as assessments -----------------------------------------------------------------


def test_judge_scores_are_assessments_of_their_judge_logged_once(collected):
    rubric = load_rubric()
    report = auto(AutoJudgeParams(judge="rules-judge"), collected)
    assert report.mirrored_assessments == CELLS * (len(CRITERIA) + 1)
    store = BenchStore.of(collected)
    cells = {c.cell_id: c for c in store.cells(BENCHMARK_EXPERIMENT)}
    traces = traces_of(collected)
    for judgment in store.judgments(rubric.version):
        cell = cells[judgment.cell_id]
        assessments = traces[cell.cell_id].info.assessments
        assert {a.name for a in assessments} == {*CRITERIA, "composite"}
        for a in assessments:
            assert a.source.source_type == AssessmentSourceType.CODE  # the rules judge is code
            assert a.source.source_id == "rules-judge"
            assert a.metadata["rubric_version"] == "tip-v1"
            assert a.metadata["rubric_hash"] == rubric.text_hash
        scores = {name: getattr(judgment, name) for name in CRITERIA}
        assert feedback(traces[cell.cell_id]) == {
            **{(name, "rules-judge", "0"): level for name, level in scores.items()},
            ("composite", "rules-judge", "0"): rubric.composite(
                scores, cell.format_ok, cell.overlong
            ),
        }

    # Mirroring again, by a rerun or directly, adds nothing.
    assert auto(AutoJudgeParams(judge="rules-judge"), collected).mirrored_assessments == 0
    assert mirror_to_mlflow(collected, store, BENCHMARK_EXPERIMENT, rubric).assessments == 0

    # A model judge's batch: its own source type, and only its assessments added.
    store.apply_batch(
        JudgeBatch(
            batch_id="llm-batch",
            judge="some-llm",
            judge_kind="llm",
            rubric_version=rubric.version,
            rubric_hash=rubric.text_hash,
            source="test",
        ),
        [
            Judgment(
                cell_id=cell_id,
                judge="some-llm",
                rubric_version=rubric.version,
                repeat=0,
                relevance=4,
                actionability=3,
                tone=5,
            )
            for cell_id in cells
        ],
    )
    mirrored = mirror_to_mlflow(collected, store, BENCHMARK_EXPERIMENT, rubric)
    assert mirrored.assessments == CELLS * (len(CRITERIA) + 1)
    for trace in traces_of(collected).values():
        sources = {(a.source.source_id, a.source.source_type) for a in trace.info.assessments}
        assert sources == {
            ("rules-judge", AssessmentSourceType.CODE),
            ("some-llm", AssessmentSourceType.LLM_JUDGE),
        }
        assert len(feedback(trace)) == 2 * (len(CRITERIA) + 1)


def test_a_judge_file_by_a_person_is_human_feedback(collected, tmp_path):
    document = json.loads(export(collected, path=tmp_path / "todo.json").path.read_text())
    document["judge"] = {"name": "ana", "kind": "human"}
    for item in document["items"]:
        item["scores"] = {"relevance": 4, "actionability": 3, "tone": 5}
    (tmp_path / "done.json").write_text(json.dumps(document))
    report = apply_file(collected, tmp_path / "done.json")
    assert report.mirrored_assessments == CELLS * (len(CRITERIA) + 1)
    for trace in traces_of(collected).values():
        assert {a.source.source_type for a in trace.info.assessments} == {"HUMAN"}
        assert feedback(trace)[("tone", "ana", "0")] == 5


# --- the prompt registry ----------------------------------------------------------------------


def test_the_prompt_mirror_registers_each_released_version_once(settings):
    client = registry_client(settings)
    assert prompt_mirror_problems(client) == [
        f"{version} has no copy in MLflow's prompt {PROMPT_NAME}" for version in PROMPTS
    ]
    mirrored = mirror_prompts(client)
    assert list(mirrored) == list(PROMPTS)
    context = load_scenario_set().scenarios[0].prompt_context()
    for version, copy in mirrored.items():
        assert copy.tags == {VERSION_TAG: version, HASH_TAG: prompt_hash(version)}
        assert copy.template == chat_template(version)
        # The copy is the prompt: filled in, it is what the service renders.
        filled = copy.format(facts=context.facts_block(), tasks=context.tasks_block())
        assert filled == render(version, context)
    assert prompt_mirror_problems(client) == []

    # Collect tags each cell's run at its creation with what MLflow's run linking writes.
    run = client.create_run(client.create_experiment("linking")).info.run_id
    client.link_prompt_version_to_run(run, mirrored["v1"])
    linked_by_mlflow = client.get_run(run).data.tags[TraceTagKey.LINKED_PROMPTS]
    assert run_link_tags(mirrored["v1"]) == {TraceTagKey.LINKED_PROMPTS: linked_by_mlflow}

    again = mirror_prompts(client)
    assert {v: p.version for v, p in again.items()} == {v: p.version for v, p in mirrored.items()}
    assert len(client.search_prompt_versions(PROMPT_NAME)) == len(PROMPTS)


def test_a_prompt_copy_that_differs_from_the_code_fails_the_check_and_stops_collect(settings):
    client = registry_client(settings)
    mirror_prompts(client)
    tampered = client.register_prompt(
        PROMPT_NAME,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "{{facts}}"}],
        tags={VERSION_TAG: "v2-mentor", HASH_TAG: prompt_hash("v2-mentor")},
    )
    client.set_prompt_version_tag(PROMPT_NAME, 1, HASH_TAG, "0" * 64)
    problems = prompt_mirror_problems(client)
    assert problems == [
        f"prompts:/{PROMPT_NAME}/1, tagged {VERSION_TAG}=v1, differs from the code in its "
        f"{HASH_TAG} tag",
        f"{tampered.uri}, tagged {VERSION_TAG}=v2-mentor, differs from the code in its template",
    ]
    with pytest.raises(PromptMirrorConflict, match="source of truth"):
        mirror_prompts(client)
    with pytest.raises(PromptMirrorConflict):
        collect(grid(), settings)
    assert BenchStore.of(settings).cell_ids() == set()  # refused before the first cell
    assert len(client.search_prompt_versions(PROMPT_NAME)) == len(PROMPTS) + 1
