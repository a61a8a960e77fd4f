"""Rubrics as data (benchmark/rubrics/<version>.yaml), the composite, and the score models.

A rubric's YAML is the one home of its criteria: their names, questions, anchor levels and
weights. A judge scores each criterion at one of its anchor levels; `format_ok` and `overlong`
never come from a judge: they are the prompt's output contract checked by code
(service/generation/prompts.py `check_output`). The composite is the rubric's weighted sum of
both. The pydantic models of a judge's scores (the judge file's, the judge answer's) are built
from the criteria here, never listed by hand.
"""

import hashlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from benchmark.store import STORED_CRITERIA

RUBRIC_DIR = Path(__file__).with_name("rubrics")
DEFAULT_RUBRIC = "tip-v1"
FLAGS: tuple[str, ...] = ("format_ok", "overlong")
Level = Literal[1, 2, 3, 4, 5]
_RATIONALE_MAX_CHARS = 1000


class Criterion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    question: str = Field(min_length=1)
    anchors: dict[Level, str]

    @model_validator(mode="after")
    def _every_level(self) -> "Criterion":
        if sorted(self.anchors) != [1, 2, 3, 4, 5]:
            raise ValueError("a criterion needs an anchor for each level 1-5")
        return self

    @property
    def lowest(self) -> int:
        return min(self.anchors)

    @property
    def highest(self) -> int:
        return max(self.anchors)


class Rubric(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    instructions: str
    criteria: dict[str, Criterion]
    weights: dict[str, float]
    text: str = Field(default="", description="the YAML it was read from, verbatim")

    @model_validator(mode="after")
    def _known_terms(self) -> "Rubric":
        # The ledger keeps every rubric version's judgments in one table, a column per criterion.
        if tuple(self.criteria) != STORED_CRITERIA:
            raise ValueError(f"criteria must be {', '.join(STORED_CRITERIA)} in that order")
        if set(self.weights) != {*self.criteria, *FLAGS}:
            raise ValueError(f"weights must name exactly {', '.join((*self.criteria, *FLAGS))}")
        return self

    @property
    def text_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def composite(self, scores: Mapping[str, float], format_ok: bool, overlong: bool) -> float:
        """Weighted sum: tip-v1 is rel + act + tone + 2*format_ok - overlong."""
        terms = {**{c: float(scores[c]) for c in self.criteria}, "format_ok": format_ok}
        terms["overlong"] = overlong
        return sum(self.weights[name] * float(value) for name, value in terms.items())

    def scores_model(self, name: str, *, strict: bool, doc: str | None = None) -> type[BaseModel]:
        """A model of one judge's scores: an integer level per criterion, in the rubric's
        order, and an optional rationale; `name` and `doc` become its JSON schema's title and
        description."""
        fields: dict[str, Any] = {
            criterion: (int, Field(ge=c.lowest, le=c.highest))
            for criterion, c in self.criteria.items()
        }
        fields["rationale"] = (str, Field(default="", max_length=_RATIONALE_MAX_CHARS))
        return create_model(
            name,
            __config__=ConfigDict(extra="forbid", frozen=True, strict=strict),
            __doc__=doc,
            **fields,
        )


def rubric_versions() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in RUBRIC_DIR.glob("*.yaml")))


@cache
def load_rubric(version: str = DEFAULT_RUBRIC) -> Rubric:
    path = RUBRIC_DIR / f"{version}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown rubric {version!r}; known: {', '.join(rubric_versions())}")
    text = path.read_text()
    rubric = Rubric.model_validate({**yaml.safe_load(text), "text": text})
    if rubric.version != version:
        raise ValueError(f"{path.name} declares version {rubric.version!r}")
    return rubric
