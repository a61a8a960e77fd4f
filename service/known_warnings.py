"""Third-party warnings a user cannot act on, and `silence`, which hides them.

Each is raised inside a dependency, about that dependency's own use of another, on every run.
They are silenced by message and category, so every other warning, ours included, still
shows. Feast turns DeprecationWarnings back on when it is imported (its modules call
`warnings.simplefilter("once", DeprecationWarning)`, which goes in front of earlier filters),
so `silence` runs again after Feast is imported (service/scoring/feature_store.py).
"""

import warnings

# (message regex, category)
KNOWN_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # ibis, inside Feast's DuckDB offline store, calls a DuckDB method DuckDB deprecated.
    (r"fetch_arrow_table\(\) is deprecated", DeprecationWarning),
    # MLflow's SQLAlchemy tracking store uses a loader SQLAlchemy 2.1 deprecated.
    (r"The ``noload`` loader strategy is deprecated", DeprecationWarning),
    # MLflow's signature inference, on the scorer's integer features, which are never missing.
    (r"Hint: Inferred schema contains integer column", UserWarning),
)


def silence() -> None:
    """Put the known warnings' ignore filters in front of every filter set so far."""
    for message, category in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
