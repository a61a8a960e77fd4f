"""The tip benchmark end to end: scenarios, rubric, collect, judge, against real MLflow and a
loopback server that speaks Ollama's /api/show and /api/chat (perf/loopback_llm.py)."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import hypothesis
import pytest
import yaml
from hypothesis import strategies as st
from typer.testing import CliRunner

from benchmark.collect import CELL_TAG, collect
from benchmark.grid import CollectParams
from benchmark.judge_prompt import judge_messages, parse_scores, parse_tip
from benchmark.judging import (
    MAX_FILE_BYTES,
    MAX_JSON_VALUES,
    SCHEMA_PATH,
    AutoJudgeParams,
    JudgeRejected,
    apply_file,
    auto,
    export,
    write_schema,
)
from benchmark.models import (
    MODELS_CONFIG,
    ModelRefused,
    ModelsConfig,
    ModelsFile,
    model_family,
    parse_size,
)
from benchmark.rubric import load_rubric
from benchmark.scenarios import ScenarioSet, load_scenario_set
from benchmark.store import BenchStore
from perf.loopback_llm import GARBLED, GOOD_TIP, JUDGE_SCORES, LoopbackLLM
from service.generation.gateway import GatewayConfig
from service.generation.prompts import PROMPTS, render
from service.settings import Settings
from service.tracking import registry_client
from tipml.cli import app

OFFLINE = ("rules", "generic-baseline", "chatty-baseline")
SCENARIOS = ("student-late-night", "manager-morning", "parent-evening", "newcomer-first-day")


@pytest.fixture(scope="module")
def loopback():
    with LoopbackLLM(slow_s=0.4) as server:
        yield server


def config_with(loopback: LoopbackLLM, **extra: dict) -> ModelsConfig:
    """The shipped models.yaml, Ollama at the loopback, plus `extra` deployments by name."""
    raw = yaml.safe_load(MODELS_CONFIG.read_text())
    raw.setdefault("env_defaults", {})["OLLAMA_API_BASE"] = loopback.api_base("ollama")
    for name, params in extra.items():
        raw["model_list"].append(
            {
                "model_name": name,
                "litellm_params": params,
                "model_info": {
                    "id": f"test-{name}",
                    "input_cost_per_token": 0.0,
                    "output_cost_per_token": 0.0,
                },
            }
        )
    return ModelsFile.model_validate(raw).resolve()


def store_of(settings: Settings) -> BenchStore:
    return BenchStore.of(settings)


def chats(loopback: LoopbackLLM) -> list:
    return [r for r in loopback.requests if r.path.endswith("/api/chat")]


# --- scenarios and rubric ---------------------------------------------------------------------


def test_scenarios_cover_four_personas_at_two_slots_and_render_through_production_prompts():
    scenario_set = load_scenario_set()
    slots = {(s.persona, s.slot) for s in scenario_set.scenarios}
    personas = {p for p, _ in slots}
    assert len([p for p in personas if {(p, "usual"), (p, "off")} <= slots]) >= 4
    for scenario in scenario_set.scenarios:
        context = scenario.prompt_context()
        for version in PROMPTS:
            user = render(version, context)[-1]["content"]
            assert context.facts_block() in user and context.tasks_block() in user
    newcomer = next(s for s in scenario_set.scenarios if s.persona == "new_user")
    assert "preferred_hour" in newcomer.prompt_context().facts.fallback_features


def test_a_scenario_edit_changes_the_set_hash_and_bad_sets_are_refused():
    scenario_set = load_scenario_set()
    raw = scenario_set.model_dump(mode="json")
    raw["scenarios"][0]["profile"]["streak_days"] += 1
    assert ScenarioSet.model_validate(raw).content_hash != scenario_set.content_hash
    del raw["scenarios"][0]["profile"]["streak_days"]
    with pytest.raises(ValueError, match="profile lacks streak_days"):
        ScenarioSet.model_validate(raw)
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario_set.select(["no-such-scenario"])
    with pytest.raises(ValueError, match="known: tip-scenarios-v1"):
        load_scenario_set("tip-scenarios-v0")


def test_rubric_tip_v1_composite_and_anchors():
    rubric = load_rubric("tip-v1")
    scores = {"relevance": 4, "actionability": 3, "tone": 5}
    assert rubric.composite(scores, format_ok=True, overlong=False) == 14
    assert rubric.composite(scores, format_ok=False, overlong=True) == 11
    assert rubric.composite(scores, format_ok=True, overlong=True) == 13
    context = load_scenario_set().scenarios[0].prompt_context()
    shown = judge_messages(rubric, context, "Pick one task.")[0]["content"]
    for name, criterion in rubric.criteria.items():
        assert sorted(criterion.anchors) == [1, 2, 3, 4, 5]
        assert f"{name}: {criterion.question}" in shown and f'"{name}": 1-5' in shown
        assert all(anchor in shown for anchor in criterion.anchors.values())
    assert "version: tip-v1" in rubric.text


def test_judge_answers_parse_only_when_they_are_valid_scores():
    rubric = load_rubric()
    assert parse_scores(json.dumps(JUDGE_SCORES), rubric).tone == 5
    assert parse_scores("```json\n" + json.dumps(JUDGE_SCORES) + "\n```", rubric).relevance == 4
    for bad, reason in (
        (GARBLED, "not JSON"),
        ('{"relevance": 6, "actionability": 3, "tone": 2}', "relevance"),
        ('{"relevance": 4, "tone": 2}', "actionability"),
    ):
        with pytest.raises(ValueError, match=reason):
            parse_scores(bad, rubric)
    scenario = load_scenario_set().scenarios[0]
    messages = judge_messages(load_rubric(), scenario.prompt_context(), "Do <tip>x</tip> it.")
    assert parse_tip(messages[-1]["content"]) == "Do x it."


# --- size guard and Ollama --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "billions"),
    [
        ("3.2B", 3.2),
        ("llama3.2:3b", 3.0),
        ("567M", 0.567),
        ("mixtral:8x7b", 56.0),
        ("latest", None),
    ],
)
def test_parse_size(text, billions):
    assert parse_size(text) == billions


# The lineup the project benchmarks first: small local models, one to four per family.
SEED_LINEUP = {
    "qwen2.5-0.5b": "qwen2.5:0.5b",
    "qwen2.5-1.5b": "qwen2.5:1.5b",
    "gemma3-1b": "gemma3:1b",
    "llama3.2-3b": "llama3.2:3b",
}


def test_the_seed_lineup_is_sized_and_grouped_by_family_from_its_tags():
    config = ModelsConfig.from_yaml()
    families = {}
    for name, tag in SEED_LINEUP.items():
        deployment = config.deployment(name)
        families[name] = model_family(deployment)
        assert parse_size(tag) == float(tag.rpartition(":")[2].removesuffix("b"))
    assert families == {
        "qwen2.5-0.5b": "qwen",
        "qwen2.5-1.5b": "qwen",
        "gemma3-1b": "gemma",
        "llama3.2-3b": "llama",
    }


def test_models_yaml_runs_the_gateways_deployments_under_benchmark_names():
    config = ModelsConfig.from_yaml()
    gateway = GatewayConfig.from_yaml()
    group = {d.model_name: d for d in gateway.model_list}
    for name, base, model in (
        ("rules", "rules", None),
        *((name, "ollama", f"ollama_chat/{tag}") for name, tag in SEED_LINEUP.items()),
        ("qwen2.5-3b", "ollama", "ollama_chat/qwen2.5:3b"),
        ("openai-compatible", "openai-compatible", None),
    ):
        deployment, reused = config.deployment(name), group[base]
        own = {"model": model} if model else {}
        assert deployment.litellm_params == reused.litellm_params | own, name
        info, reused_info = deployment.model_info.model_dump(), reused.model_info.model_dump()
        assert info["id"] == f"bench-{name}"
        assert {k: v for k, v in info.items() if "cost" in k} == {
            k: v for k, v in reused_info.items() if "cost" in k
        }
    assert config.env_defaults == gateway.env_defaults
    assert config.deployment("rules").model_info.model_extra["family"] == "rules"
    unknown = ModelsFile.model_validate({"model_list": [{"from_gateway": "no", "model_name": "x"}]})
    with pytest.raises(ValueError, match="from_gateway 'no' must name a model group"):
        unknown.resolve()


def test_size_guard_refuses_big_and_unknown_models_before_any_call(settings, loopback):
    config = config_with(
        loopback,
        **{
            "qwen-7b": {"model": "ollama_chat/qwen2.5:7b", "api_base": loopback.api_base("ollama")},
            "mistral-7b": {
                "model": "ollama_chat/mistral:7b",
                "api_base": loopback.api_base("ollama"),
            },
            "mystery": {
                "model": "ollama_chat/mystery:latest",
                "api_base": loopback.api_base("ollama"),
            },
        },
    )
    loopback.requests.clear()
    for model, reason in (
        ("qwen-7b", r"7.6B parameters \(/api/show: 7.6B\) is over the 4B limit"),
        ("mistral-7b", r"7B parameters \(name tag '7b'\)"),
        ("mystery", "parameter count unknown"),
    ):
        with pytest.raises(ModelRefused, match=reason):
            collect(CollectParams(models=("rules", model), scenarios=SCENARIOS), settings, config)
    assert chats(loopback) == []
    assert store_of(settings).cell_ids() == set()  # refused up front: not even `rules` ran

    report = collect(
        CollectParams(
            models=("mystery",), prompts=("v1",), scenarios=SCENARIOS[:1], allow_unknown_size=True
        ),
        settings,
        config,
    )
    assert report.collected == 1


def test_collect_is_model_major_and_sends_ollama_keep_alive_zero(settings, loopback):
    config = config_with(loopback)
    loopback.requests.clear()
    report = collect(
        CollectParams(
            models=("llama3.2-3b", "qwen2.5-3b"),
            prompts=("v1", "v2-mentor"),
            scenarios=SCENARIOS,
            concurrency=4,
        ),
        settings,
        config,
    )
    assert (report.cells, report.collected, report.llm_calls) == (16, 16, 16)
    requests = chats(loopback)
    assert [r.body["model"] for r in requests] == ["llama3.2:3b"] * 8 + ["qwen2.5:3b"] * 8
    # Ollama reads keep_alive at the top level of /api/chat, so the model unloads at once.
    assert {r.body["keep_alive"] for r in requests} == {0}
    assert all("keep_alive" not in r.body.get("options", {}) for r in requests)
    assert {c.text for c in store_of(settings).cells("tip-benchmark")} == {GOOD_TIP}


def test_collect_logs_one_mlflow_run_per_cell_and_a_rerun_makes_no_calls(settings, loopback):
    config = config_with(loopback)
    params = CollectParams(models=("rules", "llama3.2-3b"), scenarios=SCENARIOS, samples=2)
    first = collect(params, settings, config)
    assert (first.cells, first.collected, first.failed) == (48, 48, {})

    client = registry_client(settings)
    experiment = client.get_experiment_by_name("tip-benchmark")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(runs) == 48 and len({r.data.tags[CELL_TAG] for r in runs}) == 48
    run = next(r for r in runs if r.data.tags["model"] == "llama3.2-3b")
    tags = run.data.tags
    assert tags["judge_pending"] == "true" and tags["prompt_version"] in PROMPTS
    assert tags["scenario"] in SCENARIOS and tags["scenario_set"] == "tip-scenarios-v1"
    assert {"latency_ms", "prompt_tokens", "completion_tokens", "cost_usd"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"prompt.json", "candidate.txt", "response.json"}

    loopback.requests.clear()
    again = collect(params, settings, config)
    assert (again.collected, again.already, again.llm_calls) == (0, 48, 0)
    elsewhere = collect(
        params.model_copy(update={"benchmark": "tip-benchmark-copy"}), settings, config
    )
    assert (elsewhere.collected, elsewhere.llm_calls, elsewhere.cache_hits) == (48, 0, 48)
    assert chats(loopback) == []


@pytest.mark.integration
def test_a_killed_collect_resumes_with_no_duplicate_cells(settings, loopback):
    # MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI: an earlier test's would leak.
    env = os.environ | {
        "TIPML_HOME": str(settings.home),
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "OLLAMA_API_BASE": loopback.api_base("ollama-slow"),
    }
    command = [
        str(Path(sys.executable).parent / "tipml"),
        "bench",
        "collect",
        "--models",
        "llama3.2-3b",
        "--prompts",
        "v1,v3-few-shot",
        "--concurrency",
        "1",
        "--samples",
        "2",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ledger = settings.bench_dir / "bench.db"
    deadline = time.monotonic() + 120
    collected_before = 0
    while time.monotonic() < deadline and collected_before < 4:
        time.sleep(0.2)
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        if ledger.exists():
            with sqlite3.connect(ledger) as db:
                collected_before = db.execute("SELECT count(*) FROM cells").fetchone()[0]
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 4 <= collected_before < 40

    # The narrowest crash: a cell's MLflow run written, its ledger row not.
    client = registry_client(settings)
    experiment = client.get_experiment_by_name("tip-benchmark")
    orphan = client.create_run(experiment.experiment_id, tags={CELL_TAG: "interrupted"})

    config = config_with(loopback)  # the fast loopback from here on
    report = collect(
        CollectParams(models=("llama3.2-3b",), prompts=("v1", "v3-few-shot"), samples=2),
        settings,
        config,
    )
    assert report.cells == 40 and report.collected + report.already == 40
    assert report.orphans_deleted >= 1
    assert client.get_run(orphan.info.run_id).info.lifecycle_stage == "deleted"
    cells = store_of(settings).cells("tip-benchmark")
    assert len(cells) == len({c.cell_id for c in cells}) == 40
    live = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(live) == 40 and {r.info.run_id for r in live} == {c.run_id for c in cells}


# --- judging ----------------------------------------------------------------------------------


@pytest.fixture
def collected(settings) -> Settings:
    report = collect(CollectParams(models=OFFLINE, scenarios=SCENARIOS), settings)
    assert report.collected == 36
    return settings


def test_the_published_judge_file_schema_is_the_one_apply_enforces(tmp_path):
    assert write_schema(tmp_path / "schema.json").read_bytes() == SCHEMA_PATH.read_bytes()


def filled(path: Path, judge: str = "ana") -> dict:
    document = json.loads(path.read_text())
    document["judge"] = {"name": judge, "kind": "human"}
    for item in document["items"]:
        item["scores"] = {"relevance": 4, "actionability": 3, "tone": 5}
    return document


def write(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document))
    return path


def ledger_counts(settings: Settings) -> tuple[int, int]:
    store = store_of(settings)
    return len(store.judgments("tip-v1")), len(store.batches())


def test_malformed_judge_files_apply_nothing_and_say_why(collected, tmp_path):
    exported = export(collected)
    assert exported.items == 36
    good = filled(exported.path)
    cases = {
        "unknown id": (lambda d: d["items"][3].update(item_id="f" * 64), "items.3 .*unknown item"),
        "out of range": (lambda d: d["items"][5]["scores"].update(tone=6), r"items.5.scores.tone"),
        "missing field": (
            lambda d: d["items"][7]["scores"].pop("relevance"),
            "relevance: Field required",
        ),
        "no scores": (lambda d: d["items"][8].update(scores=None), "items.8 .*scores missing"),
        "no judge": (lambda d: d.pop("judge"), "judge: Field required"),
        "placeholder judge": (lambda d: d["judge"].update(name="FILL-IN"), "replace FILL-IN"),
        "wrong rubric": (lambda d: d["rubric"].update(version="tip-v0"), "unknown rubric 'tip-v0'"),
        "edited rubric": (lambda d: d["rubric"].update(text="be nice"), "not the released one"),
        "duplicate": (lambda d: d["items"].append(d["items"][0]), "duplicate item id"),
    }
    for name, (corrupt, reason) in cases.items():
        document = json.loads(json.dumps(good))
        corrupt(document)
        with pytest.raises(JudgeRejected, match=reason):
            apply_file(collected, write(tmp_path / f"{name}.json", document))
        assert ledger_counts(collected) == (0, 0), name
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps(good)[:-40])
    with pytest.raises(JudgeRejected, match="not valid JSON"):
        apply_file(collected, truncated)
    assert ledger_counts(collected) == (0, 0)

    report = apply_file(collected, write(tmp_path / "good.json", good))
    assert (report.applied, report.judge, report.mirrored_runs) == (36, "ana", 36)
    assert ledger_counts(collected) == (36, 1)
    with pytest.raises(JudgeRejected, match="already judged by 'ana'"):
        apply_file(collected, tmp_path / "good.json")
    assert ledger_counts(collected) == (36, 1)

    client = registry_client(collected)
    run = client.get_run(store_of(collected).cells("tip-benchmark")[0].run_id)
    assert run.data.tags["judge_pending"] == "false" and run.data.tags["judges"] == "ana"
    assert run.data.metrics["relevance"] == 4 and run.data.metrics["tone"] == 5
    rubric_text = client.download_artifacts(run.info.run_id, "rubric-tip-v1.yaml")
    assert Path(rubric_text).read_text() == load_rubric().text


# --- the judge file as an attacker writes it ----------------------------------------------------


@pytest.fixture(scope="module")
def judge_file(tmp_path_factory) -> tuple[Settings, dict]:
    """A ledger of 36 collected cells and their exported judge file, filled in, not applied.
    Shared by the tests below: each one leaves the ledger as it found it."""
    settings = Settings(home=tmp_path_factory.mktemp("judge-file"))
    assert collect(CollectParams(models=OFFLINE, scenarios=SCENARIOS), settings).collected == 36
    return settings, filled(export(settings).path)


def ledger_dump(settings: Settings) -> list[str]:
    with closing(sqlite3.connect(settings.bench_dir / "bench.db")) as db:
        return list(db.iterdump())


def at(document: object, path: tuple) -> object:
    for step in path:
        document = document[step]
    return document


def put(document: object, path: tuple, value: object) -> object:
    """A copy of `document` with `value` at `path`, a tuple of keys and list indexes."""
    document = json.loads(json.dumps(document))
    at(document, path[:-1])[path[-1]] = value
    return document


def refusal(settings: Settings, path: Path) -> str:
    """Why `path` is refused, having checked that the ledger is as it was."""
    before = ledger_dump(settings)
    with pytest.raises(JudgeRejected) as refused:
        apply_file(settings, path)
    assert ledger_dump(settings) == before
    return str(refused.value)


def test_a_judge_file_value_coercible_to_the_schema_type_is_refused_by_field(judge_file, tmp_path):
    settings, good = judge_file
    # An item whose first task has priority 1: pydantic's Literal takes true and 1.0 for it.
    first = next(
        i for i, item in enumerate(good["items"]) if item["context"]["tasks"][0]["priority"] == 1
    )
    priority = ("items", first, "context", "tasks", 0, "priority")
    cases = [
        (("items", 0, "scores", "relevance"), "4", r"items\.0\.scores\.relevance: .*valid integer"),
        (("items", 1, "scores", "tone"), True, r"items\.1\.scores\.tone: .*valid integer"),
        (
            ("items", 2, "scores", "actionability"),
            4.0,
            r"items\.2\.scores\.actionability: .*integer",
        ),
        (("items", 3, "format_ok"), 1, r"items\.3\.format_ok: .*valid boolean"),
        (("items", 3, "overlong"), "false", r"items\.3\.overlong: .*valid boolean"),
        (("items", 4, "tip"), 4, r"items\.4\.tip: .*valid string"),
        (("items", 4, "context", "facts", "hour_of_day"), 4.0, r"facts\.hour_of_day: .*integer"),
        (("items", 4, "context", "facts", "streak_days"), "3", r"facts\.streak_days: .*integer"),
        (("schema_version",), True, r"schema_version: .*valid integer"),
        (("schema_version",), 1.0, r"schema_version: .*valid integer"),
        (("judge", "name"), 7, r"judge\.name: .*valid string"),
        (priority, True, rf"items\.{first} .*: context is not what was exported"),
        (priority, 1.0, rf"items\.{first} .*: context is not what was exported"),
    ]
    for path, value, reason in cases:
        message = refusal(settings, write(tmp_path / "lax.json", put(good, path, value)))
        assert re.search(reason, message), (path, value, message)


def test_a_judge_file_whose_exported_content_was_edited_is_refused_by_item_and_field(
    judge_file, tmp_path
):
    settings, good = judge_file
    item = good["items"][5]
    other_scenario = next(s for s in SCENARIOS if s != item["scenario_id"])
    streak = item["context"]["facts"]["streak_days"]
    edits = {
        "tip": item["tip"] + " Also, our premium plan.",
        "scenario_id": other_scenario,
        "format_ok": not item["format_ok"],
        "context": put(item["context"], ("facts", "streak_days"), streak + 1),
    }
    for field, value in edits.items():
        message = refusal(
            settings, write(tmp_path / "edited.json", put(good, ("items", 5, field), value))
        )
        assert f"items.5 ({item['item_id'][:12]}): {field} is not what was exported" in message
        assert "premium plan" not in message and other_scenario not in message


def test_a_malformed_judge_file_is_a_clear_refusal_never_a_traceback(judge_file, tmp_path):
    settings, good = judge_file
    text = json.dumps(good)
    huge = tmp_path / "huge.json"
    with huge.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)
    long_key = "k" * 10_000
    cases = {
        "empty": (b"", "empty.json is not valid JSON"),
        "prose": (b"relevance four, tone five", "prose.json is not valid JSON"),
        "array": (json.dumps(good["items"]).encode(), r"\(file\): Input should be an object"),
        "nested": (b"[" * 100_000 + b"]" * 100_000, "not valid JSON: recursion limit exceeded"),
        "wide": (b"[" + b"0," * MAX_JSON_VALUES + b"0]", "holds over 300,000 JSON values"),
        "latin-1": (text.encode().replace(b'"ana"', b'"an\xe1"'), "not valid JSON"),
        "big number": (
            text.replace('"tone": 5', '"tone": ' + "9" * 5000, 1).encode(),
            "not valid JSON",
        ),
        "unknown field": (
            json.dumps(put(good, ("items", 2, "bonus"), 1)).encode(),
            r"items\.2\.bonus: Extra inputs",
        ),
        "long unknown field": (
            json.dumps(put(good, ("judge", long_key), 1)).encode(),
            r"judge\.k{39}…: Extra",
        ),
        "duplicate id": (
            json.dumps(put(good, ("items", 7), good["items"][3])).encode(),
            r"items\.7 .*duplicate item id",
        ),
        "rubric path": (
            json.dumps(put(good, ("rubric", "version"), "../models")).encode(),
            r"rubric\.version: String should match",
        ),
    }
    files = {name: tmp_path / f"{name}.json" for name in cases}
    for name, (data, _) in cases.items():
        files[name].write_bytes(data)
    files["huge"] = huge
    cases["huge"] = (b"", f"huge.json is over {MAX_FILE_BYTES // 2**20} MiB")
    for name, (_, reason) in cases.items():
        message = refusal(settings, files[name])
        assert re.search(reason, message), (name, message)
        assert long_key not in message
    result = CliRunner().invoke(
        app, ["--home", str(settings.home), "bench", "judge", "apply", str(files["nested"])]
    )
    assert result.exit_code == 1 and "nothing applied" in result.output, result.output
    assert "Traceback" not in result.output


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def like(value: object) -> st.SearchStrategy:
    """Values of the JSON type of `value`: mutations that get past type checks to the others."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-1, 6)
    if isinstance(value, float):
        return st.floats(0, 1)
    if isinstance(value, str):
        return st.text(max_size=12)
    return json_values


def json_paths(value: object, path: tuple = ()) -> list[tuple]:
    """The path of every value in `value`, itself first."""
    if isinstance(value, dict):
        children = value.items()
    elif isinstance(value, list):
        children = enumerate(value)
    else:
        children = ()
    return [path] + [p for key, child in children for p in json_paths(child, (*path, key))]


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(data=st.data())
def test_a_mutated_judge_file_is_applied_whole_or_refused_changing_nothing(judge_file, data):
    settings, good = judge_file
    # Three items: the other fields get a fair share of the mutations, and an apply stays quick.
    document = put(good, ("items",), good["items"][:3])
    for _ in range(data.draw(st.integers(0, 3), label="mutations")):
        path = data.draw(st.sampled_from(json_paths(document)), label="path")
        if isinstance(at(document, path), dict) and data.draw(st.booleans(), label="new key"):
            path = (*path, data.draw(st.text(max_size=8), label="key"))
            value = data.draw(json_values, label="value")
        else:
            value = data.draw(like(at(document, path)) | json_values, label="value")
        document = put(document, path, value) if path else value
    mutant = write(settings.home / "mutant.json", document)
    ledger = settings.bench_dir / "bench.db"
    with closing(sqlite3.connect(":memory:")) as snapshot:
        with closing(sqlite3.connect(ledger)) as live:
            live.backup(snapshot)
        before = ledger_dump(settings)
        try:
            report = apply_file(settings, mutant)
        except JudgeRejected as refused:
            hypothesis.event("refused", refused.problems[0].split(":")[0])
            assert ledger_dump(settings) == before
        else:  # none, or one a judge may make (a score, the rationale, the name): all applied
            hypothesis.event("applied")
            assert report.applied == len(document["items"])
            # Undone, so that the next example's file is not "already judged".
            with closing(sqlite3.connect(ledger)) as live:
                snapshot.backup(live)


def test_auto_judging_refuses_its_own_family_and_counts_unparseable_answers(collected, loopback):
    config = config_with(
        loopback,
        **{
            "qwen-judge": {
                "model": "ollama_chat/qwen2.5:3b",
                "api_base": loopback.api_base("judge"),
            },
            "garbled-judge": {
                "model": "ollama_chat/llama3.2:3b",
                "api_base": loopback.api_base("garbled"),
            },
        },
    )
    with pytest.raises(JudgeRejected, match="family 'rules', as candidate"):
        auto(AutoJudgeParams(judge="rules"), collected, config)

    loopback.requests.clear()
    garbled = auto(AutoJudgeParams(judge="garbled-judge"), collected, config)
    assert (garbled.judgments, garbled.unparseable, garbled.call_failures) == (0, 36, 0)
    assert store_of(collected).judgments("tip-v1") == []

    loopback.requests.clear()
    report = auto(AutoJudgeParams(judge="qwen-judge", repeats=3, repeat_items=5), collected, config)
    assert (report.items, report.judgments, report.unparseable) == (36, 36 + 2 * 5, 0)
    bodies = [r.body for r in chats(loopback)]
    assert {b["options"]["temperature"] for b in bodies} == {0}
    assert all(b["format"]["properties"].keys() >= {"relevance", "tone"} for b in bodies)
    judgments = store_of(collected).judgments("tip-v1")
    assert {(j.relevance, j.actionability, j.tone) for j in judgments} == {(4, 3, 5)}
    assert max(j.repeat for j in judgments) == 2

    offline = auto(AutoJudgeParams(judge="rules-judge"), collected)
    assert (offline.judgments, offline.unparseable) == (36, 0)
    # The offline judge tells the context-aware writer from the fixed-text floors.
    model_of = {c.cell_id: c.model for c in store_of(collected).cells("tip-benchmark")}
    relevance: dict[str, list[int]] = {}
    for j in store_of(collected).judgments("tip-v1"):
        if j.judge == "rules-judge":
            relevance.setdefault(model_of[j.cell_id], []).append(j.relevance)
    mean = {model: sum(values) / len(values) for model, values in relevance.items()}
    assert mean["rules"] > max(mean["generic-baseline"], mean["chatty-baseline"]) + 1


def test_bench_cli_names_bad_options(settings):
    runner = CliRunner()
    home = ["--home", str(settings.home)]
    result = runner.invoke(app, [*home, "bench", "collect", "--models", "rules", "--samples", "0"])
    assert result.exit_code == 2 and "--samples" in result.output
    result = runner.invoke(app, [*home, "bench", "collect", "--models", "gpt-9"])
    assert result.exit_code == 2 and "unknown model 'gpt-9'" in result.output
    result = runner.invoke(app, [*home, "bench", "collect", "--models", "rules", "--prompts", "v9"])
    assert result.exit_code == 2 and "--prompts" in result.output and "v9" in result.output


# In a fresh interpreter: what the CLI loads, with nothing of this test process preloaded.
LOADED_AFTER = """
import json, sys
from typer.testing import CliRunner
from tipml.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"litellm", "mlflow", "feast", "sklearn"})
print(json.dumps({"code": result.exit_code, "output": result.output, "heavy": heavy}))
"""


def cli_in_a_fresh_process(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", LOADED_AFTER, *args], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_a_collect_with_nothing_left_and_a_judge_export_load_no_llm_or_mlflow(collected):
    home = ["--home", str(collected.home)]
    again = cli_in_a_fresh_process(
        *home, "bench", "collect", "--models", ",".join(OFFLINE), "--scenarios", ",".join(SCENARIOS)
    )
    assert again["code"] == 0 and "nothing to do" in again["output"]
    assert again["heavy"] == []
    export = cli_in_a_fresh_process(
        *home, "bench", "judge", "export", "--out", str(collected.home / "j.json")
    )
    assert export["code"] == 0 and "36 items" in export["output"]
    assert export["heavy"] == []
    assert cli_in_a_fresh_process("--help")["heavy"] == []


def test_collect_refuses_a_design_that_cannot_detect_the_difference_asked_for(settings):
    runner = CliRunner()
    home = ["--home", str(settings.home)]
    models = ["--models", ",".join(OFFLINE)]
    small = runner.invoke(app, [*home, "bench", "collect", *models, "--detect", "1"])
    assert small.exit_code == 2 and "10 scenarios x 1 samples, 9 cells" in small.output
    assert "cannot detect" in small.output and "25 scenarios would" in small.output
    assert store_of(settings).cells("tip-benchmark") == []  # nothing was collected
    for bad in ("inf", "nan", "0"):
        refused = runner.invoke(app, [*home, "bench", "collect", *models, "--detect", bad])
        assert refused.exit_code == 2 and "--detect" in refused.output, refused.output
    # Two cells, one test: ten scenarios detect about 3.6 composite points.
    two = ["--models", "rules", "--prompts", "v1,v2-mentor"]
    enough = runner.invoke(app, [*home, "bench", "collect", *two, "--detect", "4"])
    assert enough.exit_code == 0, enough.output
    assert re.search(r"10 scenarios x 1 samples, 2 cells: detects 3\.\d\d", enough.output)
    assert len(store_of(settings).cells("tip-benchmark")) == 20


def test_benchmark_flow_offline_end_to_end_and_without_a_judge(settings, prefect_server):
    from flows.benchmark import BenchmarkParams, benchmark

    quick = CollectParams(models=OFFLINE, prompts=("v1", "v3-few-shot"), scenarios=SCENARIOS)
    unjudged = benchmark(BenchmarkParams(collect=quick), settings)
    assert unjudged.compared is None and unjudged.judge_file is not None
    exported = json.loads(unjudged.judge_file.read_text())
    assert len(exported["items"]) == unjudged.collected.cells == 24

    report = benchmark(BenchmarkParams(collect=quick, judge="rules-judge"), settings)
    assert report.collected.llm_calls == 0  # everything collected by the first run
    assert report.judged.judgments == 24 + 2 * 10  # 10 items re-judged 3 times
    compared = report.compared
    assert compared.leaderboard[0].model == "rules"
    assert compared.leaderboard[-1].model == "chatty-baseline"
    assert compared.html_path.exists() and compared.png_path.exists()

    result = CliRunner().invoke(app, ["--home", str(settings.home), "bench", "compare"])
    assert result.exit_code == 0, result.output
    assert "rules" in result.output and "report:" in result.output
