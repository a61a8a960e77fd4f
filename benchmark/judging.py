"""Phase B, judge: scores on the rubric for collected cells, from a file or from a model.

`export` writes the cells no judge has scored yet, with the rubric, as one JSON file whose
schema is published (benchmark/schemas/judge-file.schema.json). `apply_file` validates the
whole filled-in file (schema, rubric version and text, item ids, every score) and applies it
in one transaction with the judge's identity, or applies nothing and lists every problem.
`auto` asks a model from benchmark/models.yaml at temperature 0 for JSON scores; an answer
that does not parse is recorded as a failure, never as a score, and a sample of items can be
judged k times to measure the judge's own variance.

After a batch is committed, each judged cell's MLflow run gets the mean scores, the composite,
`judge_pending=false`, the judges and the rubric text; that mirror is idempotent.
"""

import asyncio
import hashlib
import json
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from mlflow.entities import Metric, RunTag
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from benchmark.collect import DEFAULT_BENCHMARK
from benchmark.compare import item_scores
from benchmark.judge_prompt import ANSWER_SCHEMA, UnparseableAnswer, judge_messages, parse_scores
from benchmark.models import ModelClient, ModelsConfig, model_family
from benchmark.rubric import CRITERIA, DEFAULT_RUBRIC, Rubric, load_rubric
from benchmark.scenarios import Scenario, load_scenario_set
from benchmark.store import BenchStore, Cell, JudgeBatch, JudgeFailure, Judgment
from service.model_registry import registry_client
from service.prompt_context import PromptContext
from service.settings import Settings

SCHEMA_PATH = Path(__file__).with_name("schemas") / "judge-file.schema.json"
SCHEMA_VERSION = 1
Score = Annotated[int, Field(ge=1, le=5)]


class JudgeRejected(ValueError):
    """A judge file or run that was not applied; `problems` says why, item by item."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:20] + (
            [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        )
        super().__init__("nothing applied:\n  " + "\n  ".join(shown))


# --- the judge file: the published exchange format -------------------------------------------


class ItemScores(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    relevance: Score
    actionability: Score
    tone: Score
    rationale: str = Field(default="", max_length=1000)


class JudgeItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str = Field(min_length=1, description="the cell id; do not edit")
    scenario_id: str
    context: PromptContext = Field(description="what the candidate model was told")
    tip: str = Field(description="the candidate's answer, to be judged")
    format_ok: bool = Field(description="computed by code; not for the judge to score")
    overlong: bool = Field(description="computed by code; not for the judge to score")
    scores: ItemScores | None = Field(default=None, description="the judge fills this in")


class RubricRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    text_sha256: str
    text: str


class JudgeIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1]
    benchmark: str
    rubric: RubricRef
    judge: JudgeIdentity
    exported_at: datetime
    items: list[JudgeItem] = Field(min_length=1)


def published_schema() -> dict:
    return JudgeFile.model_json_schema()


def write_schema() -> Path:
    SCHEMA_PATH.parent.mkdir(exist_ok=True)
    SCHEMA_PATH.write_text(json.dumps(published_schema(), indent=2, sort_keys=True) + "\n")
    return SCHEMA_PATH


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


def _rubric_ref(rubric: Rubric) -> RubricRef:
    return RubricRef(version=rubric.version, text_sha256=rubric.text_hash, text=rubric.text)


def _batch_id(judge: str, rubric: Rubric, payload: str) -> str:
    return hashlib.sha256(f"{judge}\n{rubric.version}\n{payload}".encode()).hexdigest()[:16]


def mirror_to_mlflow(settings: Settings, store: BenchStore, benchmark: str, rubric: Rubric) -> int:
    """Write each judged cell's scores and composite, as compare computes them, to its MLflow
    run; returns runs updated. Safe to repeat: the values are recomputed from the ledger."""
    cells = store.cells(benchmark)
    judgments = store.judgments(rubric.version)
    items = item_scores(cells, judgments, rubric)
    judges_of: dict[str, set[str]] = defaultdict(set)
    for judgment in judgments:
        judges_of[judgment.cell_id].add(judgment.judge)
    run_of = {c.cell_id: c.run_id for c in cells}
    client = registry_client(settings)
    now = int(time.time() * 1000)
    for item in items.itertuples():
        metrics = {name: float(getattr(item, name)) for name in (*CRITERIA, "composite")}
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
    return len(items)


# --- export and apply -------------------------------------------------------------------------


class ExportReport(BaseModel):
    path: Path
    items: int
    schema_path: Path


def export(
    settings: Settings,
    benchmark: str = DEFAULT_BENCHMARK,
    rubric_version: str = DEFAULT_RUBRIC,
    path: Path | None = None,
) -> ExportReport:
    """The benchmark's cells that no judge has scored on the rubric, as one judge file."""
    rubric = load_rubric(rubric_version)
    store = BenchStore(settings.bench_dir / "bench.db")
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
        "items": [
            JudgeItem(
                item_id=c.cell_id,
                scenario_id=c.scenario_id,
                context=scenarios[(c.scenario_set, c.scenario_id)].prompt_context(),
                tip=c.text,
                format_ok=c.format_ok,
                overlong=c.overlong,
            ).model_dump(mode="json")
            for c in pending
        ],
    }
    target = path or settings.bench_dir / f"judge-{benchmark}-{now:%Y%m%dT%H%M%SZ}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2) + "\n")
    return ExportReport(path=target, items=len(pending), schema_path=SCHEMA_PATH)


def _validation_problems(error: ValidationError) -> list[str]:
    return [f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in error.errors()]


class ApplyReport(BaseModel):
    batch_id: str
    judge: str
    rubric_version: str
    applied: int
    mirrored_runs: int


def apply_file(settings: Settings, path: Path) -> ApplyReport:
    """Validate all of `path`, then apply it in one transaction; or raise JudgeRejected."""
    raw = path.read_text()
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as error:
        raise JudgeRejected(
            [
                f"{path.name} is not valid JSON (truncated?): {error.msg} at line {error.lineno}, "
                f"column {error.colno}"
            ]
        ) from None
    try:
        batch = JudgeFile.model_validate(document)
    except ValidationError as error:
        raise JudgeRejected(_validation_problems(error)) from None

    problems: list[str] = []
    try:
        rubric = load_rubric(batch.rubric.version)
    except ValueError as error:
        raise JudgeRejected([f"rubric.version: {error}"]) from None
    if batch.rubric.text_sha256 != rubric.text_hash or batch.rubric.text != rubric.text:
        problems.append(f"rubric: the file's {batch.rubric.version} text is not the released one")
    store = BenchStore(settings.bench_dir / "bench.db")
    try:
        cells = {c.cell_id: c for c in store.cells(batch.benchmark)}
        already = {
            j.cell_id for j in store.judgments(rubric.version) if j.judge == batch.judge.name
        }
        seen: set[str] = set()
        judgments = []
        for index, item in enumerate(batch.items):
            where = f"items.{index} ({item.item_id[:12]})"
            if item.item_id not in cells:
                problems.append(f"{where}: unknown item id in benchmark {batch.benchmark!r}")
            elif item.item_id in seen:
                problems.append(f"{where}: duplicate item id")
            elif item.item_id in already:
                problems.append(f"{where}: already judged by {batch.judge.name!r}")
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
                        **item.scores.model_dump(include=set(CRITERIA)),
                    )
                )
        if problems:
            raise JudgeRejected(problems)
        batch_id = _batch_id(batch.judge.name, rubric, raw)
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
        mirrored_runs=mirrored,
    )


# --- auto: a model judges -----------------------------------------------------------------------


class AutoJudgeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    judge: str = Field(min_length=1, description="a model name in benchmark/models.yaml")
    benchmark: str = DEFAULT_BENCHMARK
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
    client: ModelClient,
    plan: list[tuple[Cell, int]],
    contexts: dict[str, PromptContext],
    rubric: Rubric,
    concurrency: int,
) -> tuple[list[Judgment], list[JudgeFailure]]:
    gate = asyncio.Semaphore(concurrency)
    judgments: list[Judgment] = []
    failures: list[JudgeFailure] = []
    structured = {
        "type": "json_schema",
        "json_schema": {"name": "tip_scores", "schema": ANSWER_SCHEMA, "strict": True},
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
            scores = parse_scores(answer.text)
        except UnparseableAnswer as error:
            failures.append(JudgeFailure(**key, reason=f"unparseable: {error}"))
            return
        judgments.append(Judgment(**key, **scores.model_dump(include=set(CRITERIA))))

    await asyncio.gather(*(one(cell, repeat) for cell, repeat in plan))
    return judgments, failures


def auto(
    params: AutoJudgeParams, settings: Settings, config: ModelsConfig | None = None
) -> AutoJudgeReport:
    config = config or ModelsConfig.from_yaml()
    rubric = load_rubric(params.rubric)
    deployment = config.deployment(params.judge)
    family = model_family(deployment)
    store = BenchStore(settings.bench_dir / "bench.db")
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
        mirrored_runs=mirrored,
    )
