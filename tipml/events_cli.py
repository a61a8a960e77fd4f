"""`tipml events`: the event lake's upkeep: compaction, and moving a JSON-lines log into it."""

import typer

from tipml.cli_support import console, settings_of

events_app = typer.Typer(no_args_is_help=True, help="The event lake (TIPML_EVENTS_URL).")


@events_app.command("import-jsonl")
def import_jsonl_command(ctx: typer.Context) -> None:
    """Move this home's JSON-lines event log (from before the lake) into the lake."""
    from service.events.lake import import_jsonl

    settings = settings_of(ctx)
    imported = import_jsonl(settings)
    console.print(
        f"imported {imported} events into {settings.events_location}; the JSON lines are "
        f"in {settings.data_dir / 'events-jsonl'}",
        markup=False,
        soft_wrap=True,
    )


@events_app.command("compact")
def compact_command(
    ctx: typer.Context,
    closed_after_days: int = typer.Option(1, help="Whole UTC days a day must be behind today."),
) -> None:
    """Rewrite each closed day's small files as one per event type (the compaction flow)."""
    from flows.compaction import CompactionParams, compaction
    from tipml.cli_support import validated

    params = validated(CompactionParams, closed_after_days=closed_after_days)
    report = compaction(params, settings_of(ctx))
    for compacted in report.types:
        console.print(
            f"{compacted.type}: {compacted.days} days, {compacted.files_read} files -> "
            f"{compacted.rows_written} rows"
        )
