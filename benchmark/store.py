"""The benchmark's ledger: LLM response cache, collected cells, judgments, in one SQLite file.

MLflow holds one run per cell for people to browse; this ledger is what the phases read and
what makes them safe to repeat. Each cell is inserted once, after its MLflow run is complete,
in one transaction; a judge batch is applied in one transaction, or not at all. A crash leaves
at worst an MLflow run or trace that no cell points to, or a cell whose trace MLflow had not
exported yet; the next collect deletes the former and traces the latter (benchmark/traces.py).

The judgments table has a column per criterion (STORED_CRITERIA); a rubric must score exactly
those (benchmark/rubric.py checks), since one ledger holds judgments of every rubric version.
"""

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.settings import Settings

_DDL = """
CREATE TABLE IF NOT EXISTS llm_cache (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    answer TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY,
    benchmark TEXT NOT NULL,
    model TEXT NOT NULL,
    litellm_model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    scenario_set TEXT NOT NULL,
    scenario_set_hash TEXT NOT NULL,
    scenario_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    params TEXT NOT NULL,
    text TEXT NOT NULL,
    format_ok INTEGER NOT NULL,
    overlong INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    cost_usd REAL,
    from_cache INTEGER NOT NULL,
    run_id TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS judge_batches (
    batch_id TEXT PRIMARY KEY,
    judge TEXT NOT NULL,
    judge_kind TEXT NOT NULL,
    rubric_version TEXT NOT NULL,
    rubric_hash TEXT NOT NULL,
    source TEXT NOT NULL,
    applied TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS judgments (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id),
    judge TEXT NOT NULL,
    rubric_version TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    relevance INTEGER NOT NULL CHECK (relevance BETWEEN 1 AND 5),
    actionability INTEGER NOT NULL CHECK (actionability BETWEEN 1 AND 5),
    tone INTEGER NOT NULL CHECK (tone BETWEEN 1 AND 5),
    batch_id TEXT NOT NULL REFERENCES judge_batches(batch_id),
    PRIMARY KEY (cell_id, judge, rubric_version, repeat)
);
CREATE TABLE IF NOT EXISTS judge_failures (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id),
    judge TEXT NOT NULL,
    rubric_version TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    reason TEXT NOT NULL,
    batch_id TEXT NOT NULL REFERENCES judge_batches(batch_id)
);
"""


class Cell(BaseModel):
    """One collected answer: a model, a prompt version, a scenario and a sample index."""

    model_config = ConfigDict(frozen=True)

    cell_id: str
    benchmark: str = Field(description="the MLflow experiment its run is in")
    model: str = Field(description="the benchmark's model name (a model group)")
    litellm_model: str
    prompt_version: str
    prompt_hash: str
    scenario_set: str
    scenario_set_hash: str
    scenario_id: str
    sample: int
    params: dict[str, object]
    text: str
    format_ok: bool
    overlong: bool
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    from_cache: bool
    run_id: str


class _JudgmentKey(BaseModel):
    """What one judge's answer on one cell is about: the key of a judgment or a failure."""

    model_config = ConfigDict(frozen=True)

    cell_id: str
    judge: str
    rubric_version: str
    repeat: int = Field(ge=0)


class Judgment(_JudgmentKey):
    """A judge's levels for one cell: a field, and a judgments column, per criterion."""

    relevance: int = Field(ge=1, le=5)
    actionability: int = Field(ge=1, le=5)
    tone: int = Field(ge=1, le=5)


class JudgeFailure(_JudgmentKey):
    """A judge call or answer that gave no score: recorded apart, never counted as a score."""

    reason: str


STORED_CRITERIA: tuple[str, ...] = tuple(
    name for name in Judgment.model_fields if name not in _JudgmentKey.model_fields
)


class JudgeBatch(BaseModel):
    model_config = ConfigDict(frozen=True)

    batch_id: str
    judge: str
    judge_kind: Literal["human", "llm", "rules"]
    rubric_version: str
    rubric_hash: str
    source: str = Field(description="the file applied, or the judge model's run")


def _now() -> str:
    return datetime.now(UTC).isoformat()


class BenchStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Autocommit off; every write below is one explicit transaction.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(_DDL)

    @classmethod
    def of(cls, settings: Settings) -> "BenchStore":
        """The ledger every phase reads and writes: bench.db under settings.bench_dir."""
        return cls(settings.bench_dir / "bench.db")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # --- the LLM response cache ------------------------------------------------------------

    def cached(self, key: str) -> dict | None:
        row = self._db.execute("SELECT answer FROM llm_cache WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def cache(self, key: str, model: str, answer: dict) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO llm_cache VALUES (?, ?, ?, ?)",
                (key, model, json.dumps(answer), _now()),
            )

    # --- cells ------------------------------------------------------------------------------

    def cell_ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT cell_id FROM cells")}

    def run_ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT run_id FROM cells")}

    def add_cell(self, cell: Cell) -> None:
        row = cell.model_dump()
        row["params"] = json.dumps(cell.params, sort_keys=True)
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._transaction() as db:
            db.execute(
                f"INSERT INTO cells ({columns}, created) VALUES ({marks}, ?)",
                (*row.values(), _now()),
            )

    def cells(self, benchmark: str) -> list[Cell]:
        """The benchmark's cells in the order they were collected."""
        query = f"SELECT {', '.join(Cell.model_fields)} FROM cells WHERE benchmark = ?"
        cells = []
        for row in self._db.execute(query + " ORDER BY rowid", (benchmark,)):
            values = dict(zip(Cell.model_fields, row, strict=True))
            cells.append(Cell.model_validate(values | {"params": json.loads(values["params"])}))
        return cells

    # --- judgments --------------------------------------------------------------------------

    def judged_cell_ids(self, rubric_version: str) -> set[str]:
        rows = self._db.execute(
            "SELECT DISTINCT cell_id FROM judgments WHERE rubric_version = ?", (rubric_version,)
        )
        return {row[0] for row in rows}

    def apply_batch(
        self,
        batch: JudgeBatch,
        judgments: Sequence[Judgment],
        failures: Sequence[JudgeFailure] = (),
    ) -> None:
        """All of it or nothing: one transaction, rolled back on any constraint failure."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO judge_batches VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*batch.model_dump().values(), _now()),
            )
            db.executemany(
                "INSERT INTO judgments VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(*j.model_dump().values(), batch.batch_id) for j in judgments],
            )
            db.executemany(
                "INSERT INTO judge_failures VALUES (?, ?, ?, ?, ?, ?)",
                [(*f.model_dump().values(), batch.batch_id) for f in failures],
            )

    def judgments(self, rubric_version: str) -> list[Judgment]:
        columns = ", ".join(Judgment.model_fields)
        rows = self._db.execute(
            f"SELECT {columns} FROM judgments WHERE rubric_version = ? ORDER BY rowid",
            (rubric_version,),
        )
        return [
            Judgment.model_validate(dict(zip(Judgment.model_fields, r, strict=True))) for r in rows
        ]

    def judgment_batches(self, rubric_version: str) -> dict[tuple[str, str, int], JudgeBatch]:
        """The batch each judgment on `rubric_version` was applied in, by (cell_id, judge,
        repeat): who gave it, as what kind of judge, on which rubric text."""
        batches = {batch.batch_id: batch for batch in self.batches()}
        rows = self._db.execute(
            "SELECT cell_id, judge, repeat, batch_id FROM judgments WHERE rubric_version = ?",
            (rubric_version,),
        )
        return {(cell_id, judge, repeat): batches[b] for cell_id, judge, repeat, b in rows}

    def failures(self, rubric_version: str) -> list[JudgeFailure]:
        columns = ", ".join(JudgeFailure.model_fields)
        rows = self._db.execute(
            f"SELECT {columns} FROM judge_failures WHERE rubric_version = ?", (rubric_version,)
        )
        return [
            JudgeFailure.model_validate(dict(zip(JudgeFailure.model_fields, r, strict=True)))
            for r in rows
        ]

    def batches(self) -> list[JudgeBatch]:
        columns = ", ".join(JudgeBatch.model_fields)
        rows = self._db.execute(f"SELECT {columns} FROM judge_batches ORDER BY rowid")
        return [
            JudgeBatch.model_validate(dict(zip(JudgeBatch.model_fields, r, strict=True)))
            for r in rows
        ]
