"""Rubrics as data (benchmark/rubrics/<version>.yaml) and the code that scores with them.

A judge scores the criteria (1-5 each, against the anchor sentences); `format_ok` and
`overlong` never come from a judge: they are the prompt's output contract checked by code
(service/generation/prompts.py `check_output`). The composite is the rubric's weighted sum of both.
"""

import hashlib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

RUBRIC_DIR = Path(__file__).with_name("rubrics")
DEFAULT_RUBRIC = "tip-v1"
CRITERIA: tuple[str, ...] = ("relevance", "actionability", "tone")
FLAGS: tuple[str, ...] = ("format_ok", "overlong")
Level = Literal[1, 2, 3, 4, 5]


class Criterion(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    question: str = Field(min_length=1)
    anchors: dict[Level, str]

    @model_validator(mode="after")
    def _every_level(self) -> "Criterion":
        if sorted(self.anchors) != [1, 2, 3, 4, 5]:
            raise ValueError("a criterion needs an anchor for each level 1-5")
        return self


class Rubric(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*$")
    instructions: str
    criteria: dict[str, Criterion]
    weights: dict[str, float]
    text: str = Field(default="", description="the YAML it was read from, verbatim")

    @model_validator(mode="after")
    def _known_terms(self) -> "Rubric":
        if tuple(self.criteria) != CRITERIA:
            raise ValueError(f"criteria must be {', '.join(CRITERIA)} in that order")
        if set(self.weights) != {*CRITERIA, *FLAGS}:
            raise ValueError(f"weights must name exactly {', '.join((*CRITERIA, *FLAGS))}")
        return self

    @property
    def text_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def composite(self, scores: Mapping[str, float], format_ok: bool, overlong: bool) -> float:
        """Weighted sum: tip-v1 is rel + act + tone + 2*format_ok - overlong."""
        terms = {**{c: float(scores[c]) for c in CRITERIA}, "format_ok": format_ok}
        terms["overlong"] = overlong
        return sum(self.weights[name] * float(value) for name, value in terms.items())

    def judge_prompt(self) -> str:
        """The rubric as a judge reads it: instructions, then each criterion's anchors."""
        lines = [self.instructions, ""]
        for name, criterion in self.criteria.items():
            lines.append(f"{name}: {criterion.question}")
            lines.extend(f"  {level}: {anchor}" for level, anchor in criterion.anchors.items())
        return "\n".join(lines)


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
