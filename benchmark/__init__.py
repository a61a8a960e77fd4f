"""The tip benchmark: model x prompt version x scenario, judged on a rubric, compared in MLflow.

Phases: collect (collect.py), judge (judging.py), compare (compare.py); the Prefect flow
flows/benchmark.py runs them in order, `tipml bench` one at a time. No phase imports another:
they share the modules below them.

- inputs: scenarios.py (fixed contexts), rubric.py (criteria, weights, score models),
  models.py (models.yaml's deployments, many reused from the service's LLM gateway; size
  guard; calls)
- the ledger: store.py (cache, cells, judgments); items.py (cells with their judges' scores)
- judging: judge_prompt.py (what a judge sees and answers), rules_judge.py (an offline judge)
- comparing: stats.py (intervals, tests, agreement), report_models.py (the report as data),
  report.py (its HTML page and chart)
"""

# service/__init__.py tells LiteLLM it is offline; it must run before anything here imports
# LiteLLM, which would otherwise fetch a price map from GitHub.
import service  # noqa: F401
