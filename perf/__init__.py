"""Speed, memory and scale benchmarks: each prints ratios against a baseline it measures in
the same run. Run them as modules from the repository root (`python -m perf.score_load`), or
all with `make perf`."""
