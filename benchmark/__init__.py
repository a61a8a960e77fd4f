"""The tip benchmark: model x prompt version x scenario, judged on a rubric, compared in MLflow.

Phases: collect (collect.py), judge (judging.py), compare (compare.py); the Prefect flow
flows/benchmark.py runs them in order, `tipml bench` one at a time. No phase imports another:
they share the modules below them.

- inputs: scenarios.py (fixed contexts; scenario_gen.py generates set v2 from the simulator's
  personas), rubric.py (criteria, weights, score models), models.py (models.yaml's
  deployments, many reused from the service's LLM gateway; size guard; calls), grid.py (what
  a collect answers and what the ledger still lacks: no LiteLLM, no MLflow)
- the ledger: store.py (cache, cells, judgments); items.py (cells with their judges' scores)
- in MLflow: traces.py (candidates as traces, judgments as assessments), prompt_mirror.py
  (the released prompts in MLflow's prompt registry)
- judging: judge_prompt.py (what a judge sees and answers), rules_judge.py (an offline judge)
- comparing: stats.py (intervals, tests, agreement), power.py (what a design can detect, and
  what a difference needs), report_models.py (the report as data), report.py (its HTML page
  and chart)
"""

# service/__init__.py tells LiteLLM it is offline; it must run before anything here imports
# LiteLLM, which would otherwise fetch a price map from GitHub.
import service  # noqa: F401
