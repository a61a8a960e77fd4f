"""Benchmark: cumulative regret of the prompt bandit against epsilon-greedy and a uniform A/B.

Each policy serves the same stream of simulated /generate requests: N impressions from a pool of
users, each accepted with the simulator's true probability for the arm the policy chose,
sigmoid(base logit + PROMPT_EFFECT[arm]) (flows/simulation/world.py; about 0.23, 0.26 and 0.29 at
the default base logit of -1.2). Every arm is chosen by the real
`service.experiments.assignment.decide` from the state in a real SQLite `SqliteBanditStore` (a fresh
file per run), and the rewards are applied in batches of B impressions, as the bandit_update flow
would every 15 minutes; until a batch lands the policy sees the old state.

  thompson        the shipped `prompt-bandit` experiment (service/experiments/experiments.yaml)
  epsilon-greedy  the same experiment with policy epsilon_greedy and --epsilon
  uniform A/B     the same arms, sticky per user, one third each

Regret is the expected reward lost against always showing the best arm, summed over the
impressions: sum of p(best) - p(chosen). It does not depend on the reward draws, only on the
choices, so it is less noisy than counting missed accepts. The policies see the same users,
request ids and reward draws (common random numbers), and the headline is the ratio of each
policy's regret to the uniform A/B's, averaged over seeds.

    .venv/bin/python -m perf.bandit_regret [--impressions 50000] [--batch 500] [--seeds 5]
"""

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flows.simulation.world import PROMPT_EFFECT
from service.experiments.assignment import decide
from service.experiments.bandit_state import Batch, Reward, SqliteBanditStore
from service.experiments.config import Experiment, ExperimentsConfig

BANDIT = "prompt-bandit"
USERS = 5000
GOAL_THOMPSON_RATIO = 1 / 3
LAST_SHARE = 10_000  # impressions at the end over which the best arm's share is reported


@dataclass(frozen=True)
class Run:
    policy: str
    seed: int
    regret: float
    best_share_last: float


def policies(epsilon: float) -> dict[str, Experiment]:
    bandit = ExperimentsConfig.from_yaml().active(BANDIT)
    fields = bandit.model_dump(exclude_unset=True)
    k = len(bandit.arms)
    # Thirds on the 1/10000 bucket grid: the last arm takes the rounding.
    thirds = [round(1 / k, 4)] * (k - 1)
    thirds.append(round(1 - sum(thirds), 4))
    uniform = {key: v for key, v in fields.items() if key not in {"floor", "min_exposures"}}
    return {
        "thompson": bandit,
        "epsilon-greedy": Experiment.model_validate(
            fields | {"policy": "epsilon_greedy", "epsilon": epsilon}
        ),
        "uniform A/B": Experiment.model_validate(
            uniform | {"policy": "weighted", "weights": dict(zip(bandit.arms, thirds, strict=True))}
        ),
    }


def simulate(
    name: str,
    experiment: Experiment,
    p_accept: dict[str, float],
    seed: int,
    impressions: int,
    batch: int,
    path: Path,
) -> Run:
    rng = np.random.default_rng(seed)
    users = rng.integers(USERS, size=impressions)
    draws = rng.random(impressions)
    best = max(p_accept.values())
    best_arm = max(p_accept, key=p_accept.__getitem__)
    store = SqliteBanditStore(path)
    state = store.read(experiment.id)
    regret = 0.0
    best_last = 0
    pending: list[Reward] = []
    for i in range(impressions):
        request_id = f"s{seed}-r{i}"
        arm = decide(experiment, f"u{users[i]}", request_id, state).arm
        regret += best - p_accept[arm]
        best_last += i >= impressions - LAST_SHARE and arm == best_arm
        pending.append(Reward(tip_id=request_id, arm=arm, reward=int(draws[i] < p_accept[arm])))
        if len(pending) == batch:
            state = store.apply(Batch(experiment=experiment.id, rewards=tuple(pending))).state
            pending = []
    return Run(name, seed, regret, best_last / min(LAST_SHARE, impressions))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500, help="impressions per state update")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 1..N, averaged")
    parser.add_argument("--base-logit", type=float, default=-1.2)
    parser.add_argument("--epsilon", type=float, default=0.1)
    args = parser.parse_args()

    p_accept = {arm: 1 / (1 + math.exp(-args.base_logit - e)) for arm, e in PROMPT_EFFECT.items()}
    experiments = policies(args.epsilon)
    thompson = experiments["thompson"]
    print(
        f"{args.impressions} impressions, state update every {args.batch}, seeds 1..{args.seeds}; "
        "p(accept) "
        + ", ".join(f"{arm} {p:.4f}" for arm, p in p_accept.items())
        + f"; thompson floor {thompson.floor}, min_exposures {thompson.min_exposures}; "
        f"epsilon {args.epsilon}"
    )
    started = time.perf_counter()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="tipml-regret-") as tmp:
        for seed in range(1, args.seeds + 1):
            for index, (name, experiment) in enumerate(experiments.items()):
                path = Path(tmp) / f"policy{index}-seed{seed}.sqlite"
                runs.append(
                    simulate(name, experiment, p_accept, seed, args.impressions, args.batch, path)
                )

    print(f"\n  {'policy':<15} {'regret mean':>11} {'sd':>7} {'per seed':<40} best arm, last 10k")
    regret: dict[str, float] = {}
    for name in experiments:
        mine = [r for r in runs if r.policy == name]
        values = [r.regret for r in mine]
        regret[name] = statistics.fmean(values)
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = " ".join(f"{v:.0f}" for v in values)
        share = statistics.fmean(r.best_share_last for r in mine)
        print(f"  {name:<15} {regret[name]:>11.1f} {spread:>7.1f} {per_seed:<40} {share:.3f}")

    uniform = regret["uniform A/B"]
    ratio = regret["thompson"] / uniform
    print("\nratios (mean regret over the uniform A/B's, same stream):")
    print(f"  thompson / uniform        {ratio:.3f}")
    print(f"  epsilon-greedy / uniform  {regret['epsilon-greedy'] / uniform:.3f}")
    met = ratio <= GOAL_THOMPSON_RATIO
    print(f"goal thompson / uniform <= 1/3: {'MET' if met else 'NOT MET'}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
