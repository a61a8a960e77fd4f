"""The tip benchmark: model x prompt version x scenario, judged on a rubric, compared in MLflow.

Phases: collect (benchmark/collect.py), judge (benchmark/judging.py), compare
(benchmark/compare.py); the Prefect flow flows/benchmark.py runs them in order.
"""

# service/__init__.py tells LiteLLM it is offline; it must run before anything here imports
# LiteLLM, which would otherwise fetch a price map from GitHub.
import service  # noqa: F401
