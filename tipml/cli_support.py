"""What every tipml command shares: the consoles, the settings options, validation of options,
and clean failure."""

import inspect
from collections.abc import Callable
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from rich.console import Console
from rich.markup import escape

from service.settings import ENV_VARS, Settings

console = Console()
err = Console(stderr=True)
Model = TypeVar("Model", bound=BaseModel)
Callback = TypeVar("Callback", bound=Callable[..., None])


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


def _settings_option(name: str, field: FieldInfo) -> inspect.Parameter:
    """Settings field -> `--name`: read from its ENV_VARS entry, of the field's type (a Literal's
    values are its choices), with the field's description as its help."""
    if not field.description:
        raise TypeError(f"Settings.{name} needs a description: it is the help of its option")
    # A default one would type shows in --help. Otherwise None, "not given", lets Settings fill in
    # its own (home's is a path on this machine, so its description names it instead).
    default = field.default if isinstance(field.default, str) else None
    option = typer.Option(envvar=ENV_VARS[name], help=field.description)
    annotation: Any = Annotated[field.annotation, option]
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def settings_options(callback: Callback) -> Callback:
    """Give `callback(ctx, **settings)` one option per Settings field, so that a new setting is
    a global option of `tipml` without a line here or in the CLI."""
    own = [
        p
        for p in inspect.signature(callback).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    options = [_settings_option(name, f) for name, f in Settings.model_fields.items()]
    # Typer reads a callback's options from inspect.signature, which takes __signature__ first.
    callback.__signature__ = inspect.Signature([*own, *options])  # type: ignore[attr-defined]
    return callback
