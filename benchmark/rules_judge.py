"""The offline "rules-judge": a LiteLLM provider that scores a tip on tip-v1 by heuristics.

It lets the benchmark run end to end with no network and no weights, and gives a second rater
for agreement checks against a model judge. It reads what any judge reads (the facts block and
the fenced tip, benchmark/judge_prompt.py) and answers the same JSON, one level for each of the
rubric's criteria. Its scores are crude by design: a heuristic per criterion, keyword evidence
for each anchor level, deterministic, documented in the rationale.
"""

import json
import re
from collections.abc import Callable

from pydantic import BaseModel

from benchmark.judge_prompt import answer_model, parse_tip
from benchmark.rubric import load_rubric
from service.generation.offline_llm import Messages, register_provider
from service.generation.prompt_blocks import PromptFacts, parse_facts

RULES_JUDGE_PROVIDER = "rules-judge"
# The rubric its heuristics are written for; models.yaml names the judge rules-judge/tip-v1.
RUBRIC_VERSION = "tip-v1"

_VERBS = re.compile(
    r"\b(pick|set|write|block|spend|close|start|finish|give|move|put|list|take|book|reply|"
    r"plan|review|schedule|turn|open|choose|send|tick|clear|stand|step|drink|note|split|do)\b"
)
_FIRST_STEP = re.compile(r"\b(task|timer|calendar|list|inbox|notes?|tab|phone|p[1-4]|date)\b")
_TIME_BOX = re.compile(r"\b\d+[- ]?(?:minutes?|min|mins)\b|\b\d{1,2}:\d{2}\b|\buntil\b")
_LECTURE = re.compile(r"\b(should|must|really|need to|always|never|have to)\b")
_HARSH = re.compile(r"\b(lazy|failing|failure|behind|bad|terrible|wasting)\b")
_WARM = re.compile(r"\b(you can|nice|well done|great|proud|you've got|your .*streak)\b")
_LATE_WORDS = re.compile(r"\b(tonight|sleep|tomorrow|late|wind down|rest)\b")


def _relevance(facts: PromptFacts, tip: str) -> tuple[int, list[str]]:
    hits = []
    if "overdue" in tip and facts.overdue_task_count == 0:
        return 1, ["mentions overdue work the user does not have"]
    if facts.overdue_task_count and re.search(r"overdue|new date|reschedul", tip):
        hits.append("overdue tasks")
    if facts.due_today_count and "today" in tip:
        hits.append("due today")
    if (facts.hour_of_day >= 22 or facts.hour_of_day < 5) and _LATE_WORDS.search(tip):
        hits.append("the late hour")
    if facts.top_priority == 1 and re.search(r"\bp1\b|most urgent|top priority", tip):
        hits.append("the p1 task")
    if facts.streak_days >= 3 and "streak" in tip:
        hits.append("the streak")
    if facts.preferred_hour is not None and re.search(
        rf"\b{facts.preferred_hour}:00\b|strongest hour|best hour", tip
    ):
        hits.append("the preferred hour")
    if facts.open_task_count == 0 and re.search(r"clear|empty|no open tasks|nothing", tip):
        hits.append("the empty list")
    return min(5, 2 + len(hits)), hits


def _actionability(tip: str) -> int:
    if not _VERBS.search(tip):
        return 1 if not re.search(r"\b(try|be|get)\b", tip) else 2
    if not _FIRST_STEP.search(tip):
        return 3
    return 5 if _TIME_BOX.search(tip) else 4


def _tone(tip: str) -> int:
    if _HARSH.search(tip):
        return 1
    if _LECTURE.search(tip):
        return 2
    if _WARM.search(tip):
        return 5
    return 4 if re.search(r"\byou(r)?\b", tip) else 3


# (facts, lowercased tip) -> (level, the facts the tip uses), for each criterion of the rubric.
_Heuristic = Callable[[PromptFacts, str], tuple[int, list[str]]]
_HEURISTICS: dict[str, _Heuristic] = {
    "relevance": _relevance,
    "actionability": lambda _, tip: (_actionability(tip), []),
    "tone": lambda _, tip: (_tone(tip), []),
}


def score_tip(facts: PromptFacts | None, tip: str | None) -> BaseModel:
    """The judge's answer on RUBRIC_VERSION: a level per criterion, and the facts it saw used."""
    rubric = load_rubric(RUBRIC_VERSION)
    answer_of = answer_model(RUBRIC_VERSION)
    if facts is None or tip is None:
        lowest = {name: c.lowest for name, c in rubric.criteria.items()}
        return answer_of(**lowest, rationale="no facts or no tip")
    text = tip.lower()
    found = {name: _HEURISTICS[name](facts, text) for name in rubric.criteria}
    used = [fact for _, facts_used in found.values() for fact in facts_used]
    return answer_of(
        **{name: level for name, (level, _) in found.items()},
        rationale=f"uses {', '.join(used)}" if used else "uses no specific fact",
    )


def answer(messages: Messages) -> str:
    """The judge's reply: tip-v1 scores as JSON, from the facts and the fenced tip."""
    text = "\n".join(m["content"] for m in messages if m.get("role") == "user")
    return json.dumps(score_tip(parse_facts(text), parse_tip(text)).model_dump())


def register_rules_judge() -> None:
    """Route `rules-judge/...` models to the rules judge in this process; idempotent."""
    register_provider(RULES_JUDGE_PROVIDER, answer)
