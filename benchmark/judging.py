"""Phase B, judge: scores on the rubric for collected cells, from a file or from a model.

`export` writes the cells no judge has scored yet, with the rubric, as one JSON file whose
schema is published (benchmark/schemas/judge-file.schema.json, `write_schema`; the models
below, with the default rubric's scores). `apply_file` validates the whole filled-in file
(strictly against that schema, rubric version and text, item ids, every score, and every
item's exported content against the ledger) and applies it in one transaction with the
judge's identity, or applies nothing and lists every problem.
`auto` asks a model from benchmark/models.yaml at temperature 0 for JSON scores
(benchmark/judge_prompt.py); an answer that does not parse is recorded as a failure, never as
a score, and a sample of items can be judged k times to measure the judge's own variance.

After a batch is committed, each judged cell's MLflow run gets its item scores
(benchmark/items.py, as compare computes them), `judge_pending=false`, the judges and the
rubric text, and each judgment becomes assessments on the cell's MLflow trace
(benchmark/traces.py); that mirror is idempotent.
"""

import asyncio
import hashlib
import json
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import from_json

from benchmark.items import judged_items
from benchmark.judge_prompt import UnparseableAnswer, answer_model, judge_messages, parse_scores
from benchmark.rubric import DEFAULT_RUBRIC, Rubric, load_rubric
from benchmark.scenarios import Scenario, load_scenario_set
from benchmark.store import BenchStore, Cell, JudgeBatch, JudgeFailure, Judgment
from service.generation.prompt_blocks import PromptContext
from service.settings import Settings
from service.tracking import BENCHMARK_EXPERIMENT, experiment_id, registry_client

if TYPE_CHECKING:  # LiteLLM and MLflow load on the paths that call them: export needs neither
    from benchmark.models import ModelClient, ModelsConfig

SCHEMA_PATH = Path(__file__).with_name("schemas") / "judge-file.schema.json"
SCHEMA_VERSION = 1
# Above the largest benchmark's file today (7 models x 3 prompts x 10 scenarios x 20 samples:
# 4,200 items of about 3 KB and 56 JSON values each). The value bound matters as much as the
# byte one: each wrong value costs an error, and a million of them took 6 s and 1 GB.
MAX_FILE_BYTES = 32 * 2**20
MAX_JSON_VALUES = 300_000


class JudgeRejected(ValueError):
    """A judge file or run that was not applied; `problems` says why, item by item."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:20] + (
            [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        )
        super().__init__("nothing applied:\n  " + "\n  ".join(shown))


# --- the judge file: the published exchange format -------------------------------------------
# Strict models: the schema says integer, boolean and string, so a file that says "4", 4.0 or
# true is not a file the schema accepts, and lax validation would coerce it into one.


def _exactly_int(value: object) -> object:
    # pydantic's Literal takes true and 1.0 for 1, even in strict mode; the schema says integer.
    if type(value) is not int:
        raise ValueError("Input should be a valid integer")
    return value


# One published schema for every rubric version: each scores the ledger's criteria (rubric.py).
ItemScores = load_rubric(DEFAULT_RUBRIC).scores_model("ItemScores", strict=True)


class JudgeItem(BaseModel):
    """One cell to score. All but `scores` must come back as exported: apply checks the ledger."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    item_id: str = Field(min_length=1, description="the cell id; do not edit")
    scenario_id: str
    context: PromptContext = Field(description="what the candidate model was told")
    tip: str = Field(description="the candidate's answer, to be judged")
    format_ok: bool = Field(description="computed by code; not for the judge to score")
    overlong: bool = Field(description="computed by code; not for the judge to score")
    scores: ItemScores | None = Field(default=None, description="the judge fills this in")


class RubricRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # Rubric.version's own pattern: a file name in benchmark/rubrics, never a path out of it.
    version: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    text_sha256: str
    text: str


class JudgeIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$")
    kind: Literal["human", "llm", "rules"]

    @field_validator("name")
    @classmethod
    def _not_placeholder(cls, name: str) -> str:
        if name == "FILL-IN":
            raise ValueError("replace FILL-IN with the judge's name")
        return name


class JudgeFile(BaseModel):
    """One batch of items for one judge. Fill in `judge` and every item's `scores`."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    schema_version: Annotated[Literal[1], BeforeValidator(_exactly_int)]
    benchmark: str
    rubric: RubricRef
    judge: JudgeIdentity
    exported_at: datetime
    items: list[JudgeItem] = Field(min_length=1)


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    """Write the judge file's JSON schema to `path`: by default the published file, which must
    stay byte for byte what this writes (a test writes it elsewhere and compares)."""
    schema = JudgeFile.model_json_schema()
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
    return path


# --- shared -----------------------------------------------------------------------------------


def _scenarios(cells: list[Cell]) -> dict[tuple[str, str], Scenario]:
    """The scenario each cell answered, refusing a set whose content changed since."""
    found: dict[tuple[str, str], Scenario] = {}
    for set_id, set_hash in sorted({(c.scenario_set, c.scenario_set_hash) for c in cells}):
        scenario_set = load_scenario_set(set_id)
        if scenario_set.content_hash != set_hash:
            raise JudgeRejected(
                [f"scenario set {set_id} changed since its cells were collected; recollect"]
            )
        found.update({(set_id, s.id): s for s in scenario_set.scenarios})
    return found


def _exported_item(cell: Cell, scenarios: dict[tuple[str, str], Scenario]) -> JudgeItem:
    """The item export writes for `cell`, so also what apply must get back, scores aside."""
    return JudgeItem(
        item_id=cell.cell_id,
        scenario_id=cell.scenario_id,
        context=scenarios[(cell.scenario_set, cell.scenario_id)].prompt_context(),
        tip=cell.text,
        format_ok=cell.format_ok,
        overlong=cell.overlong,
    )


def _rubric_ref(rubric: Rubric) -> RubricRef:
    return RubricRef(version=rubric.version, text_sha256=rubric.text_hash, text=rubric.text)


def _batch_id(judge: str, rubric: Rubric, payload: str) -> str:
    return hashlib.sha256(f"{judge}\n{rubric.version}\n{payload}".encode()).hexdigest()[:16]


class Mirrored(BaseModel):
    runs: int = Field(description="judged cells' runs given their scores")
    assessments: int = Field(description="assessments added to the cells' traces")


def mirror_to_mlflow(
    settings: Settings, store: BenchStore, benchmark: str, rubric: Rubric
) -> Mirrored:
    """Write each judged cell's scores and composite, as compare computes them, to its MLflow
    run, and each judgment's scores as assessments on the cell's trace; returns the runs
    updated and the assessments added. Safe to repeat: the run values are recomputed from the
    ledger, and a trace gets only the assessments it lacks."""
    cells = store.cells(benchmark)
    judgments = store.judgments(rubric.version)
    items = judged_items(cells, judgments, rubric)
    judges_of: dict[str, set[str]] = defaultdict(set)
    for judgment in judgments:
        judges_of[judgment.cell_id].add(judgment.judge)
    run_of = {c.cell_id: c.run_id for c in cells}
    from mlflow.entities import Metric, RunTag

    from benchmark.traces import mirror_judgments

    client = registry_client(settings)
    now = int(time.time() * 1000)
    for item in items.itertuples():
        metrics = {name: float(getattr(item, name)) for name in (*rubric.criteria, "composite")}
        metrics["judgments"] = float(item.n_judgments)
        tags = {
            "judge_pending": "false",
            "rubric_version": rubric.version,
            "judges": ",".join(sorted(judges_of[item.cell_id])),
        }
        client.log_batch(
            run_of[item.cell_id],
            metrics=[Metric(name, value, now, 0) for name, value in metrics.items()],
            tags=[RunTag(name, value) for name, value in tags.items()],
        )
        client.log_text(run_of[item.cell_id], rubric.text, f"rubric-{rubric.version}.yaml")
    assessments = mirror_judgments(
        client,
        experiment_id(client, settings, benchmark),
        cells,
        judgments,
        store.judgment_batches(rubric.version),
        rubric,
    )
    return Mirrored(runs=len(items), assessments=assessments)


# --- export and apply -------------------------------------------------------------------------


class ExportReport(BaseModel):
    path: Path
    items: int
    schema_path: Path


def export(
    settings: Settings,
    benchmark: str = BENCHMARK_EXPERIMENT,
    rubric_version: str = DEFAULT_RUBRIC,
    path: Path | None = None,
) -> ExportReport:
    """The benchmark's cells that no judge has scored on the rubric, as one judge file."""
    rubric = load_rubric(rubric_version)
    store = BenchStore.of(settings)
    try:
        judged = store.judged_cell_ids(rubric.version)
        pending = [c for c in store.cells(benchmark) if c.cell_id not in judged]
    finally:
        store.close()
    if not pending:
        raise ValueError(
            f"benchmark {benchmark!r} has no cells pending judgment on {rubric.version}"
        )
    scenarios = _scenarios(pending)
    now = datetime.now(UTC)
    document = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": benchmark,
        "rubric": _rubric_ref(rubric).model_dump(),
        "judge": {"name": "FILL-IN", "kind": "human"},
        "exported_at": now.isoformat(),
        "items": [_exported_item(c, scenarios).model_dump(mode="json") for c in pending],
    }
    target = path or settings.bench_dir / f"judge-{benchmark}-{now:%Y%m%dT%H%M%SZ}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2) + "\n")
    return ExportReport(path=target, items=len(pending), schema_path=SCHEMA_PATH)


def _short(part: str | int) -> str:
    # Unknown keys are the file's own text: bounded, so a problem line stays a line.
    text = str(part)
    return text if len(text) <= 40 else text[:39] + "…"


def _validation_problems(error: ValidationError) -> list[str]:
    return [
        f"{'.'.join(_short(p) for p in e['loc']) or '(file)'}: {e['msg']}"
        for e in error.errors(include_url=False, include_context=False, include_input=False)
    ]


def _over_budget(document: object) -> bool:
    """Whether `document` holds more than MAX_JSON_VALUES values, counted until it does."""
    pending, counted = [document], 1
    while pending:
        value = pending.pop()
        if isinstance(value, dict | list):
            counted += len(value)
            if counted > MAX_JSON_VALUES:
                return True
            pending.extend(value.values() if isinstance(value, dict) else value)
    return False


class _JudgeFileRead(NamedTuple):
    data: bytes
    document: dict  # the JSON as written, before validation coerced any of it
    batch: JudgeFile


def _read_judge_file(path: Path) -> _JudgeFileRead:
    """The file's bytes, its JSON and its validated content; or JudgeRejected saying why not."""
    try:
        with path.open("rb") as file:
            # One byte past the limit, not stat(): a device or a pipe reports no size.
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise JudgeRejected([f"{path.name} cannot be read: {error.strerror}"]) from None
    if len(data) > MAX_FILE_BYTES:
        raise JudgeRejected([f"{path.name} is over {MAX_FILE_BYTES // 2**20} MiB"])
    try:
        # pydantic's parser: it bounds nesting depth, and refuses bad UTF-8 and huge numbers.
        document = from_json(data)
    except ValueError as error:
        raise JudgeRejected([f"{path.name} is not valid JSON: {error}"]) from None
    if _over_budget(document):
        raise JudgeRejected([f"{path.name} holds over {MAX_JSON_VALUES:,} JSON values"])
    try:
        # strict=True here too: the models' strict config does not reach PromptContext, which
        # service/ owns and validates laxly for its other callers. From the bytes again, as
        # JSON: strict validation of a Python str would refuse `exported_at`.
        batch = JudgeFile.model_validate_json(data, strict=True)
    except ValidationError as error:
        raise JudgeRejected(_validation_problems(error)) from None
    return _JudgeFileRead(data=data, document=document, batch=batch)


def _as_exported(sent: object, exported: object) -> bool:
    """Whether JSON value `sent` is `exported` as the schema types it: a number may be written
    1 or 1.0, an integer only 1, and true is never 1 (validation alone lets both pass for a
    Literal[1, 2, 3, 4], such as a task's priority)."""
    if isinstance(exported, float):
        return type(sent) in (int, float) and sent == exported
    if isinstance(exported, dict):
        return (
            type(sent) is dict
            and sent.keys() == exported.keys()
            and all(_as_exported(sent[key], value) for key, value in exported.items())
        )
    if isinstance(exported, list):
        return (
            type(sent) is list
            and len(sent) == len(exported)
            and all(map(_as_exported, sent, exported))
        )
    return type(sent) is type(exported) and sent == exported


class ApplyReport(BaseModel):
    batch_id: str
    judge: str
    rubric_version: str
    applied: int
    mirrored_runs: int
    mirrored_assessments: int


def apply_file(settings: Settings, path: Path) -> ApplyReport:
    """Validate all of `path`, then apply it in one transaction; or raise JudgeRejected."""
    read = _read_judge_file(path)
    batch = read.batch
    problems: list[str] = []
    try:
        rubric = load_rubric(batch.rubric.version)
    except ValueError as error:
        raise JudgeRejected([f"rubric.version: {error}"]) from None
    if batch.rubric.text_sha256 != rubric.text_hash or batch.rubric.text != rubric.text:
        problems.append(f"rubric: the file's {batch.rubric.version} text is not the released one")
    store = BenchStore.of(settings)
    try:
        cells = {c.cell_id: c for c in store.cells(batch.benchmark)}
        already = {
            j.cell_id for j in store.judgments(rubric.version) if j.judge == batch.judge.name
        }
        # The ledger, not the file, says what was exported: a digest carried in the file could
        # be recomputed by whoever edited it.
        scenarios = _scenarios([cells[i.item_id] for i in batch.items if i.item_id in cells])
        seen: set[str] = set()
        judgments = []
        for index, item in enumerate(batch.items):
            where = f"items.{index} ({item.item_id[:12]})"
            cell = cells.get(item.item_id)
            if cell is None:
                problems.append(f"{where}: unknown item id in benchmark {batch.benchmark!r}")
            elif item.item_id in seen:
                problems.append(f"{where}: duplicate item id")
            elif item.item_id in already:
                problems.append(f"{where}: already judged by {batch.judge.name!r}")
            if cell is not None:
                sent = read.document["items"][index]
                exported = _exported_item(cell, scenarios).model_dump(mode="json")
                problems.extend(
                    f"{where}: {name} is not what was exported; a judge scores it, never edits it"
                    for name, value in exported.items()
                    if name != "scores" and not _as_exported(sent[name], value)
                )
            if item.scores is None:
                problems.append(f"{where}: scores missing")
            seen.add(item.item_id)
            if item.scores is not None:
                judgments.append(
                    Judgment(
                        cell_id=item.item_id,
                        judge=batch.judge.name,
                        rubric_version=rubric.version,
                        repeat=0,
                        **item.scores.model_dump(include=set(rubric.criteria)),
                    )
                )
        if problems:
            raise JudgeRejected(problems)
        batch_id = _batch_id(batch.judge.name, rubric, read.data.decode())
        store.apply_batch(
            JudgeBatch(
                batch_id=batch_id,
                judge=batch.judge.name,
                judge_kind=batch.judge.kind,
                rubric_version=rubric.version,
                rubric_hash=rubric.text_hash,
                source=str(path.resolve()),
            ),
            judgments,
        )
        mirrored = mirror_to_mlflow(settings, store, batch.benchmark, rubric)
    finally:
        store.close()
    return ApplyReport(
        batch_id=batch_id,
        judge=batch.judge.name,
        rubric_version=rubric.version,
        applied=len(judgments),
        mirrored_runs=mirrored.runs,
        mirrored_assessments=mirrored.assessments,
    )


# --- auto: a model judges -----------------------------------------------------------------------


class AutoJudgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str = Field(min_length=1, description="a model name in benchmark/models.yaml")
    benchmark: str = BENCHMARK_EXPERIMENT
    rubric: str = DEFAULT_RUBRIC
    repeats: int = Field(default=1, ge=1, le=10, description="judgments per re-judged item")
    repeat_items: int = Field(default=10, ge=0, description="items judged `repeats` times")
    allow_same_family: bool = False
    concurrency: int = Field(default=4, ge=1, le=32)
    timeout_s: float = Field(default=120.0, gt=0, le=3600)


class AutoJudgeReport(BaseModel):
    judge: str
    family: str
    batch_id: str | None
    items: int
    judgments: int
    unparseable: int = Field(description="answers that were not valid scores; not counted as 0")
    call_failures: int
    mirrored_runs: int
    mirrored_assessments: int


def _repeat_plan(cells: list[Cell], params: AutoJudgeParams) -> list[tuple[Cell, int]]:
    """(cell, repeat) pairs: every cell once, and a fixed sample of cells `repeats` times."""
    ranked = sorted(cells, key=lambda c: hashlib.sha256(c.cell_id.encode()).hexdigest())
    again = {c.cell_id for c in ranked[: params.repeat_items]} if params.repeats > 1 else set()
    return [
        (cell, repeat)
        for cell in cells
        for repeat in range(params.repeats if cell.cell_id in again else 1)
    ]


async def _judge_all(
    client: "ModelClient",
    plan: list[tuple[Cell, int]],
    contexts: dict[str, PromptContext],
    rubric: Rubric,
    concurrency: int,
) -> tuple[list[Judgment], list[JudgeFailure]]:
    gate = asyncio.Semaphore(concurrency)
    judgments: list[Judgment] = []
    failures: list[JudgeFailure] = []
    schema = answer_model(rubric.version).model_json_schema()
    structured = {
        "type": "json_schema",
        "json_schema": {"name": "tip_scores", "schema": schema, "strict": True},
    }

    async def one(cell: Cell, repeat: int) -> None:
        messages = judge_messages(rubric, contexts[cell.cell_id], cell.text)
        key = {"cell_id": cell.cell_id, "judge": client.deployment.model_name}
        key |= {"rubric_version": rubric.version, "repeat": repeat}
        async with gate:
            try:
                answer = await client.complete(messages, temperature=0, response_format=structured)
            except Exception as error:  # a failed call is reported, never scored
                failures.append(JudgeFailure(**key, reason=f"call failed: {type(error).__name__}"))
                return
        try:
            scores = parse_scores(answer.text, rubric)
        except UnparseableAnswer as error:
            failures.append(JudgeFailure(**key, reason=f"unparseable: {error}"))
            return
        judgments.append(Judgment(**key, **scores.model_dump(include=set(rubric.criteria))))

    await asyncio.gather(*(one(cell, repeat) for cell, repeat in plan))
    return judgments, failures


def auto(
    params: AutoJudgeParams, settings: Settings, config: "ModelsConfig | None" = None
) -> AutoJudgeReport:
    from benchmark.models import ModelClient, ModelsConfig, model_family

    config = config or ModelsConfig.from_yaml()
    rubric = load_rubric(params.rubric)
    deployment = config.deployment(params.judge)
    family = model_family(deployment)
    store = BenchStore.of(settings)
    try:
        done = {j.cell_id for j in store.judgments(rubric.version) if j.judge == params.judge}
        cells = [c for c in store.cells(params.benchmark) if c.cell_id not in done]
        same = sorted(
            {c.model for c in cells if model_family(config.deployment(c.model)) == family}
        )
        if same and not params.allow_same_family:
            raise JudgeRejected(
                [
                    f"judge {params.judge} is of family {family!r}, as candidate(s) "
                    f"{', '.join(same)}; pass --allow-same-family to judge them anyway"
                ]
            )
        scenarios = _scenarios(cells)
        contexts = {
            c.cell_id: scenarios[(c.scenario_set, c.scenario_id)].prompt_context() for c in cells
        }
        client = ModelClient(deployment, config.env_defaults, params.timeout_s)
        plan = _repeat_plan(cells, params)
        judgments, failures = asyncio.run(
            _judge_all(client, plan, contexts, rubric, params.concurrency)
        )
        batch_id = None
        if judgments or failures:
            payload = json.dumps(sorted(c.cell_id for c, _ in plan))
            batch_id = _batch_id(params.judge, rubric, payload)
            kind = deployment.model_info.model_extra.get("judge_kind", "llm")
            store.apply_batch(
                JudgeBatch(
                    batch_id=batch_id,
                    judge=params.judge,
                    judge_kind=kind,
                    rubric_version=rubric.version,
                    rubric_hash=rubric.text_hash,
                    source=f"{client.litellm_model} temperature=0",
                ),
                judgments,
                failures,
            )
        mirrored = mirror_to_mlflow(settings, store, params.benchmark, rubric)
    finally:
        store.close()
    return AutoJudgeReport(
        judge=params.judge,
        family=family,
        batch_id=batch_id,
        items=len(cells),
        judgments=len(judgments),
        unparseable=sum(f.reason.startswith("unparseable") for f in failures),
        call_failures=sum(f.reason.startswith("call failed") for f in failures),
        mirrored_runs=mirrored.runs,
        mirrored_assessments=mirrored.assessments,
    )
