"""The offline "rules" LLM: a deterministic LiteLLM provider that writes a tip from the prompt.

It is the embedded default and the last fallback, so the service answers with no network and
no model weights. It reads only the facts block of the last user message (the same block
every prompt version renders, parsed by service/generation/prompt_blocks.py), never the task
titles, and writes one tip that meets the output contract. Same messages, same tip.
"""

import logging
from collections.abc import Callable

from service.generation.offline_llm import Messages, last_user_text, register_provider
from service.generation.prompt_blocks import PromptFacts, parse_facts

log = logging.getLogger(__name__)

RULES_PROVIDER = "rules"

_LATE_FROM, _LATE_UNTIL = 22, 5  # local hours that count as late evening / night


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _is_late(facts: PromptFacts) -> bool:
    return facts.hour_of_day >= _LATE_FROM or facts.hour_of_day < _LATE_UNTIL


def _observed(facts: PromptFacts, feature: str) -> bool:
    return feature not in facts.fallback_features


def _category(facts: PromptFacts) -> str:
    """The asked-for category, else the one this moment calls for, else the user's favourite."""
    if facts.category is not None:
        return facts.category
    if _is_late(facts):
        return "wellbeing"
    if facts.overdue_task_count:
        return "planning"
    if facts.due_today_count:
        return "focus"
    if (facts.weekday == "Friday" and facts.hour_of_day >= 15) or facts.weekday == "Sunday":
        return "review"
    if facts.weekday == "Monday" and facts.hour_of_day < 12:
        return "planning"
    observed = {
        c: rate
        for c, rate in facts.accept_rate_28d_by_category.items()
        if _observed(facts, f"accept_rate_{c}_28d")
    }
    return max(observed, key=observed.__getitem__) if observed else "focus"


def _focus(facts: PromptFacts) -> str:
    if facts.due_today_count:
        return (
            f"{_plural(facts.due_today_count, 'task')} due today: silence notifications, set a "
            "25-minute timer and work only on the most urgent one until it rings."
        )
    if facts.preferred_hour is not None and facts.preferred_hour != facts.hour_of_day:
        return (
            f"You get the most done around {facts.preferred_hour}:00. Block that hour for your "
            "hardest task and keep meetings and messages out of it."
        )
    if facts.top_priority is not None:
        return (
            f"Give your p{facts.top_priority} task 25 undisturbed minutes now: close other tabs, "
            "mute chat, and stop only when the timer rings."
        )
    return "Choose one thing that matters today and give it 25 minutes of full attention."


def _planning(facts: PromptFacts) -> str:
    if facts.overdue_task_count:
        return (
            f"You have {_plural(facts.overdue_task_count, 'overdue task')}: pick the one that "
            "matters most, give the rest a realistic new date, and start that one for 10 minutes."
        )
    if not facts.open_task_count:
        return (
            "Your list is clear: take five minutes to write down the next three things you "
            "want to move forward this week."
        )
    if facts.weekday == "Monday":
        return (
            "Start the week by choosing the three tasks that would make it a good week, and "
            "put each one on your calendar."
        )
    return (
        f"Look over your {_plural(facts.open_task_count, 'open task')} and choose tomorrow's first "
        "one now, so the morning starts without deciding."
    )


def _wellbeing(facts: PromptFacts) -> str:
    if _is_late(facts) and facts.overdue_task_count:
        return (
            "It's late: note the first step for your most urgent overdue task, then stop for "
            "tonight. It will go faster after some sleep."
        )
    if _is_late(facts):
        return (
            "It's late: write down the first thing to do tomorrow, then close the app. Rest now "
            "makes tomorrow's focus easier."
        )
    if _observed(facts, "streak_days") and facts.streak_days >= 5:
        return (
            f"You've been active {facts.streak_days} days in a row. Take a real break today, "
            "even a short walk counts, and come back fresh."
        )
    return (
        "Stand up, stretch and drink some water before your next task: a two-minute reset "
        "pays for itself in focus."
    )


def _review(facts: PromptFacts) -> str:
    if _observed(facts, "tasks_completed_7d") and facts.tasks_completed_7d:
        return (
            f"You finished {_plural(facts.tasks_completed_7d, 'task')} this week. Take five "
            "minutes to note what helped and what got in the way, then adjust next week's plan."
        )
    return (
        "Spend five minutes on your open tasks: delete what no longer matters and give each "
        "of the rest a clear next step."
    )


_WRITERS: dict[str, Callable[[PromptFacts], str]] = {
    "focus": _focus,
    "planning": _planning,
    "wellbeing": _wellbeing,
    "review": _review,
}

_NO_FACTS_TIP = "Pick the one task that matters most today and give it 25 minutes of full focus."


def write_tip(facts: PromptFacts | None) -> str:
    """The rules' tip for these facts; a generic one when the prompt carried none."""
    if facts is None:
        return _NO_FACTS_TIP
    return _WRITERS[_category(facts)](facts)


def answer(messages: Messages) -> str:
    """The rules provider's reply: a tip from the facts of the last user message."""
    facts = parse_facts(last_user_text(messages))
    if facts is None:
        log.warning("rules provider: the last user message has no readable facts block")
    return write_tip(facts)


def register_rules_provider() -> None:
    """Route `rules/...` models to the rules writer in this process; idempotent."""
    register_provider(RULES_PROVIDER, answer)
