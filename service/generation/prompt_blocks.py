"""What a tip prompt may say about the user: the scorer's feature values and their open tasks.

The facts are the values the scorer reads for the same request (resolved profile features and
the FeatureService's context features, never recomputed), so a prompt cannot describe a user
the model never saw. Task titles are user content: they are cleaned and shortened here, at
construction, to a whitelist of characters that cannot spell a fence delimiter, a column or a
closing quote, and rendered only as quoted strings inside the fenced tasks block.

This module owns the context's wire format in both directions: the blocks a prompt embeds
(`facts_block`, `tasks_block`) and the parser the offline rules provider reads them back with.
"""

import json
import re
import unicodedata
from datetime import datetime
from typing import Annotated, Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_serializer

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.profile_features import PROFILE_FEATURES
from service.api.request import RequestContext, Task
from service.scoring.online_features import FeatureRead

MAX_PROMPT_TASKS = 5
MAX_PROMPT_TITLE_CHARS = 60

FACTS_OPEN, FACTS_CLOSE = "<facts>", "</facts>"
TASKS_OPEN, TASKS_CLOSE = "<tasks>", "</tasks>"
_FENCE_NAMES = tuple(delimiter.strip("<>/") for delimiter in (FACTS_OPEN, TASKS_OPEN))

# Characters drawn as angle brackets, after NFKC (which folds the fullwidth and small forms
# to "<" and ">"). Titles are cleaned by a whitelist, so most of these never reach a prompt by
# category alone; the letters among them are why the set exists: Unicode's confusables for "<"
# and ">" include letters (Canadian syllabics PA and PO, runic KAUNA, Miao ARCHAIC ZZA), and
# the syllabics PA/PO series' dotted forms (PAA, POO, PWA, PWO, ...) and final P draw the same
# bracket with a dot or smaller. A letter category would let them through and a title could
# spell "\u1438/tasks\u1433"; they are excluded by name. Answers are checked against the set.
ANGLE_BRACKETS = frozenset(
    "<>"
    "\u00ab\u00bb"  # double angle quotation marks (guillemets)
    "\u02c2\u02c3"  # modifier letter left and right arrowheads
    "\u2039\u203a"  # single angle quotation marks
    "\u226a\u226b"  # much less-than, much greater-than
    "\u2329\u232a"  # left- and right-pointing angle brackets
    "\u276c\u276d\u276e\u276f\u2770\u2771"  # angle bracket and quotation mark ornaments
    "\u27e8\u27e9\u27ea\u27eb"  # mathematical (double) angle brackets
    "\u2991\u2992\u29fc\u29fd"  # dotted and curved angle brackets
    "\u3008\u3009\u300a\u300b"  # CJK (double) angle brackets
    "\U0001d236\U0001d237"  # Greek instrumental notation symbols 40 and 42
    "\u1433\u1434\u1435\u1440\u1441\u1442\u1443"  # syllabics PO, POO, Y-Cree POO, PWO...
    "\u1438\u1439\u1444\u1445\u1446\u1447\u1448\u1449"  # syllabics PA, PAA, PWA..., P
    "\u16b2"  # runic letter KAUNA
    "\U00016f3f"  # Miao letter ARCHAIC ZZA
)
# Punctuation real titles use that cannot build a fence, a column or a closing quote: no
# angle brackets, no "|", no '"' or "\\". The typographic apostrophe is here because phones
# type it, the en and em dashes because editors turn hyphens into them.
_TITLE_PUNCTUATION = frozenset(" .,:;!?()&/#%+@'-\u2019\u2013\u2014$\u20ac\u00a3")
_TRUNCATED = "..."
_BRACKET = "[" + "".join(re.escape(ch) for ch in sorted(ANGLE_BRACKETS)) + "]"
_GAP = r"[\s/\u2044\u2215]*"  # spaces and slashes; NFKC keeps fraction and division slashes
_FENCE_MARKER = re.compile(_BRACKET + _GAP + f"(?:{'|'.join(_FENCE_NAMES)})" + _GAP + _BRACKET)
_FACTS_BLOCK = re.compile(
    rf"{re.escape(FACTS_OPEN)}\n(?P<json>.*?)\n{re.escape(FACTS_CLOSE)}", re.DOTALL
)

# Every profile feature but the end-of-day task counts, which the request's own counts
# supersede: both describe the same tasks at different times, and a prompt showing both
# invites contradictions.
PROMPT_PROFILE_FEATURES: tuple[str, ...] = tuple(
    f.name for f in PROFILE_FEATURES if f.name not in {"open_tasks_eod", "overdue_tasks_eod"}
)
# The features' "none" values are their fallbacks: top_priority when there are no open tasks,
# preferred_hour when it is unknown.
_NO_OPEN_TASKS_PRIORITY = next(f.fallback for f in CONTEXT_FEATURES if f.name == "top_priority")
_UNKNOWN_HOUR = next(f.fallback for f in PROFILE_FEATURES if f.name == "preferred_hour")

Weekday = Literal["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
WEEKDAYS: tuple[Weekday, ...] = get_args(Weekday)  # indexed by day_of_week, Monday = 0
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Count = Annotated[int, Field(ge=0)]
Hour = Annotated[int, Field(ge=0, le=23)]


def fold(text: str) -> str:
    """Text as it reads rather than as it is encoded: NFKC, case-folded, without the invisible
    format characters (zero-width spaces and joiners, bidi controls, soft hyphens)."""
    visible = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", visible).casefold()


def mentions_fence(text: str) -> bool:
    """Whether `text` spells a fence delimiter such as </tasks>, in any case, width or
    angle-bracket look-alike."""
    return _FENCE_MARKER.search(fold(text)) is not None


def _title_chars(title: str) -> str:
    kept: list[str] = []
    for ch in title:
        category = unicodedata.category(ch)
        if ch in ANGLE_BRACKETS:
            kept.append(" ")
        elif category[0] == "L" or category == "Nd" or ch in _TITLE_PUNCTUATION:
            kept.append(ch)
        elif category in {"Mn", "Mc"}:
            # A mark belongs to the letter before it; alone it would draw over the space or
            # the quote next to it (a combining vertical line reads as a column).
            if kept and unicodedata.category(kept[-1])[0] in "LMN":
                kept.append(ch)
        elif category != "Cf":  # invisible format characters sit inside words: no gap
            kept.append(" ")
    return "".join(kept)


def clean_title(title: str) -> str:
    """One line of whitelisted characters, at most MAX_PROMPT_TITLE_CHARS of them.

    Letters (but the angle-bracket look-alikes), combining marks, decimal digits, the space and
    _TITLE_PUNCTUATION survive, after NFKC so that fullwidth forms fold to ASCII first; anything
    else becomes a space. Cleaning a clean title changes nothing.
    """
    kept = _title_chars(unicodedata.normalize("NFKC", title))
    # Dropping a character can bring a letter and a mark together: compose them as NFKC would.
    flat = " ".join(unicodedata.normalize("NFKC", kept).split())
    if len(flat) <= MAX_PROMPT_TITLE_CHARS:
        return flat
    return flat[: MAX_PROMPT_TITLE_CHARS - len(_TRUNCATED)].rstrip() + _TRUNCATED


def _known_category(category: str | None) -> str | None:
    if category is not None and category not in TIP_CATEGORIES:
        raise ValueError(f"unknown tip category {category!r}; known: {', '.join(TIP_CATEGORIES)}")
    return category


class PromptTask(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    priority: Literal[1, 2, 3, 4]
    due: str = Field(
        pattern=r"^(?:overdue|due today|due tomorrow|due in \d+ days)?$",
        description="'overdue', 'due today', 'due tomorrow', 'due in N days' or ''",
    )
    title: Annotated[str, AfterValidator(clean_title)]


class PromptFacts(BaseModel):
    """Feature values under their feature names; a feature's "none" value becomes null."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    weekday: Weekday
    hour_of_day: Hour
    open_task_count: Count
    overdue_task_count: Count
    due_today_count: Count
    top_priority: Literal[1, 2, 3, 4] | None = Field(description="null when no open tasks")
    preferred_hour: Hour | None = Field(description="null when unknown")
    completion_rate_7d: Rate
    tasks_completed_7d: Count
    streak_days: Count
    active_days_28d: Count
    tenure_days: Count
    tips_shown_7d: Count
    tip_accept_rate_28d: Rate
    accept_rate_28d_by_category: dict[str, Rate]
    category: Annotated[str | None, AfterValidator(_known_category)] = Field(
        default=None, description="the tip category asked for; null for any"
    )
    fallback_features: tuple[str, ...] = Field(
        default=(), description="features whose value is a default, not observed"
    )

    @field_serializer("completion_rate_7d", "tip_accept_rate_28d", when_used="json")
    def _round_rate(self, rate: float) -> float:
        # Three decimals carry all a prompt can use; full floats only cost tokens.
        return round(rate, 3)

    @field_serializer("accept_rate_28d_by_category", when_used="json")
    def _round_rates(self, rates: dict[str, float]) -> dict[str, float]:
        return {name: round(rate, 3) for name, rate in rates.items()}


class PromptContext(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    facts: PromptFacts
    tasks: tuple[PromptTask, ...] = Field(default=(), max_length=MAX_PROMPT_TASKS)

    def facts_block(self) -> str:
        return f"{FACTS_OPEN}\n{self.facts.model_dump_json()}\n{FACTS_CLOSE}"

    def tasks_block(self) -> str:
        # Titles are quoted strings, data by their look: clean_title keeps no '"', "\\" or
        # "|", so a title can neither close its quotes nor add a column.
        lines = [f'- p{t.priority} | {t.due or "no due date"} | "{t.title}"' for t in self.tasks]
        return "\n".join([TASKS_OPEN, *(lines or ["(no open tasks)"]), TASKS_CLOSE])


def parse_facts(text: str) -> PromptFacts | None:
    """The facts block in a rendered message, or None when it has none or it does not parse."""
    match = _FACTS_BLOCK.search(text)
    if match is None:
        return None
    try:
        return PromptFacts.model_validate(json.loads(match["json"]))
    except ValueError:
        return None


def _due_label(due: datetime | None, now: datetime) -> str:
    # The same definitions as the context features: overdue is before the request time,
    # days are the user's local calendar days.
    if due is None:
        return ""
    if due < now:
        return "overdue"
    days = (due.astimezone(now.tzinfo).date() - now.date()).days
    return {0: "due today", 1: "due tomorrow"}.get(days, f"due in {days} days")


def _most_urgent(tasks: list[Task], now: datetime) -> tuple[PromptTask, ...]:
    # Todoist's order: priority first, then the earliest due time; undated tasks last.
    ranked = sorted(
        tasks, key=lambda t: (t.priority, t.due is None, t.due.timestamp() if t.due else 0.0)
    )
    return tuple(
        PromptTask(priority=t.priority, due=_due_label(t.due, now), title=t.title)
        for t in ranked[:MAX_PROMPT_TASKS]
    )


def build_prompt_context(
    read: FeatureRead, context: RequestContext, category: str | None = None
) -> PromptContext:
    """The prompt's view of one request, from the feature values the scorer reads for it."""
    profile, features = read.profile, read.context
    top_priority = features["top_priority"]
    preferred_hour = profile["preferred_hour"]
    facts = PromptFacts(
        weekday=WEEKDAYS[features["day_of_week"]],
        hour_of_day=features["hour_of_day"],
        open_task_count=features["open_task_count"],
        overdue_task_count=features["overdue_task_count"],
        due_today_count=features["due_today_count"],
        top_priority=None if top_priority == _NO_OPEN_TASKS_PRIORITY else top_priority,
        preferred_hour=None if preferred_hour == _UNKNOWN_HOUR else preferred_hour,
        completion_rate_7d=profile["completion_rate_7d"],
        tasks_completed_7d=profile["tasks_completed_7d"],
        streak_days=profile["streak_days"],
        active_days_28d=profile["active_days_28d"],
        tenure_days=profile["tenure_days"],
        tips_shown_7d=profile["tips_shown_7d"],
        tip_accept_rate_28d=profile["tip_accept_rate_28d"],
        accept_rate_28d_by_category={c: profile[f"accept_rate_{c}_28d"] for c in TIP_CATEGORIES},
        category=category,
        fallback_features=tuple(n for n in PROMPT_PROFILE_FEATURES if n in read.fallbacks),
    )
    now = context.timestamp.astimezone(ZoneInfo(context.timezone))
    return PromptContext(facts=facts, tasks=_most_urgent(context.tasks, now))
