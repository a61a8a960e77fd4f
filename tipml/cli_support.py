"""What every tipml command shares: the consoles, validation of options, and clean failure."""

from typing import Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.markup import escape

from service.settings import Settings

console = Console()
err = Console(stderr=True)
Model = TypeVar("Model", bound=BaseModel)


def fail(message: str, code: int = 2) -> NoReturn:
    # Escaped: option paths like `--policy[v1]` would otherwise read as Rich style tags.
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def validated(model: type[Model], **values: Any) -> Model:
    """Build `model` from CLI values, or exit naming every bad option."""
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        fail("; ".join(_describe(e["loc"]) + f": {e['msg']}" for e in exc.errors()))


def _describe(loc: tuple) -> str:
    """('user_ids', 0) -> '--user-ids[0]': the option as typed, then the item."""
    name = f"--{str(loc[0]).replace('_', '-')}" if loc else "input"
    return name + "".join(f"[{part}]" for part in loc[1:])


def settings_of(ctx: typer.Context) -> Settings:
    return ctx.obj
