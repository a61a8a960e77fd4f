"""Feast feature repository: the one definition of every feature training and serving read.

`feast apply` reads `repo.py` only (see `.feastignore`); every other module here is imported
through the `feature_repo` package so that each Feast object exists exactly once.
"""
