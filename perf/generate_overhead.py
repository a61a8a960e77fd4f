"""Benchmark: what the gateway adds over a raw `litellm.acompletion` on the same provider.

For each provider, the same rendered prompt (v1) is sent N times each way, the two ways
interleaved call by call so that machine noise falls on both alike, after an untimed warm-up:

  raw      litellm.acompletion(model=..., messages=...) straight to the provider (the baseline)
  gateway  Gateway.generate(messages, "v1"): the Router from service/generation/gateway.yaml, the
           per-attempt timeout, the output check and the result model

Providers: `rules`, the offline provider (pure overhead: its answer costs microseconds), and
`loopback`, an OpenAI-compatible HTTP server on 127.0.0.1 (perf/loopback_llm.py) as a stand-in
for a real model server. Shared machines are noisy, so the headline is the ratio of latencies
measured in the same run; nothing is asserted about time.

    .venv/bin/python -m perf.generate_overhead [--calls 300] [--providers rules loopback]
"""

import os

# This script imports LiteLLM before the service package that sets this: set it first, or
# LiteLLM tries to download its price map on import.
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import litellm

from perf.loopback_llm import LoopbackLLM
from service.generation.gateway import PRIMARY_ENV, Gateway, GatewayConfig
from service.generation.prompt_blocks import PromptContext, PromptFacts, PromptTask
from service.generation.prompts import render
from service.generation.rules_llm import register_rules_provider

LOOPBACK_MODEL = "openai/loopback-tiny"
WARM_UP_CALLS = 20
PROVIDERS = ("rules", "loopback")

FACTS = PromptFacts(
    weekday="Thursday",
    hour_of_day=14,
    open_task_count=6,
    overdue_task_count=1,
    due_today_count=2,
    top_priority=1,
    preferred_hour=10,
    completion_rate_7d=0.62,
    tasks_completed_7d=9,
    streak_days=4,
    active_days_28d=17,
    tenure_days=90,
    tips_shown_7d=8,
    tip_accept_rate_28d=0.31,
    accept_rate_28d_by_category={"focus": 0.4, "planning": 0.3, "wellbeing": 0.2, "review": 0.25},
)
MESSAGES = render(
    "v1",
    PromptContext(
        facts=FACTS,
        tasks=(
            PromptTask(priority=1, due="overdue", title="Send the quarterly report"),
            PromptTask(priority=1, due="due today", title="Prepare slides for the review"),
            PromptTask(priority=2, due="due today", title="Expense report"),
        ),
    ),
)


@dataclass(frozen=True)
class Side:
    name: str
    call: Callable[[], Awaitable[Any]]


def percentile(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[round(q) - 1]


async def measure(sides: tuple[Side, Side], calls: int) -> dict[str, list[float]]:
    """Latency in ms of each side, the sides alternating call by call."""
    for side in sides:
        for _ in range(WARM_UP_CALLS):
            await side.call()
    samples: dict[str, list[float]] = {side.name: [] for side in sides}
    for i in range(calls):
        for side in sides if i % 2 == 0 else reversed(sides):
            started = time.perf_counter()
            await side.call()
            samples[side.name].append((time.perf_counter() - started) * 1000)
    return samples


def sides_for(provider: str, stack: ExitStack) -> tuple[Side, Side]:
    config = GatewayConfig.from_yaml()
    if provider == "rules":
        raw_kwargs: dict[str, Any] = {"model": "rules/tips-v1"}
        gateway = Gateway(config.model_copy(update={"primary": "rules"}))
    else:
        server = stack.enter_context(LoopbackLLM())
        raw_kwargs = {"model": LOOPBACK_MODEL, "api_base": server.api_base("ok"), "api_key": "k"}
        os.environ |= {
            "TIPML_OPENAI_MODEL": LOOPBACK_MODEL,
            "TIPML_OPENAI_API_BASE": raw_kwargs["api_base"],
            "TIPML_OPENAI_API_KEY": raw_kwargs["api_key"],
        }
        gateway = Gateway(config.model_copy(update={"primary": "openai-compatible"}))

    async def raw() -> None:
        await litellm.acompletion(messages=MESSAGES, **raw_kwargs)

    async def through_gateway() -> None:
        result = await gateway.generate(MESSAGES, "v1")
        if result.fallback_used:
            raise RuntimeError(f"{provider}: the gateway fell back; the comparison is void")

    return Side("raw", raw), Side("gateway", through_gateway)


async def run(providers: list[str], calls: int) -> None:
    register_rules_provider()
    print(f"{calls} calls per side, interleaved, after {WARM_UP_CALLS} warm-up calls each")
    print(
        f"{'provider':<10}{'side':<9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'p50 ratio':>11}{'p99 ratio':>11}{'p50 +ms':>9}"
    )
    with ExitStack() as stack:
        for provider in providers:
            samples = await measure(sides_for(provider, stack), calls)
            base50, base99 = (percentile(samples["raw"], q) for q in (50, 99))
            for name, values in samples.items():
                p50, p99 = percentile(values, 50), percentile(values, 99)
                print(
                    f"{provider:<10}{name:<9}{p50:>9.2f}{p99:>9.2f}"
                    f"{p50 / base50:>10.2f}x{p99 / base99:>10.2f}x{p50 - base50:>9.2f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--providers", nargs="+", choices=PROVIDERS, default=list(PROVIDERS))
    args = parser.parse_args()
    os.environ.pop(PRIMARY_ENV, None)
    asyncio.run(run(args.providers, args.calls))


if __name__ == "__main__":
    main()
