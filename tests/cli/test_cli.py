"""Every command: a bad argument gets a clear error naming it, and nothing is written."""

import pytest
import typer
from typer.testing import CliRunner

from service.settings import ENV_VARS
from tipml.cli import app

runner = CliRunner()


def invoke(home, *args: str):
    return runner.invoke(app, ["--home", str(home), *args])


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["simulate", "--users", "0", "--days", "5", "--seed", "1"], "--users"),
        (["simulate", "--users", "5", "--days", "400", "--seed", "1"], "--days"),
        (["simulate", "--users", "5", "--days", "5", "--seed", "-3"], "--seed"),
        (
            ["simulate", "--users", "5", "--days", "5", "--seed", "1", "--end", "2026-13-01"],
            "--end",
        ),
        (["simulate", "--users", "many", "--days", "5", "--seed", "1"], "--users"),
        (["simulate", "--days", "5", "--seed", "1"], "--users"),
        (["features", "run", "--overlap-days", "99"], "--overlap-days"),
        (["features", "run", "--chunk-size", "0"], "--chunk-size"),
        (["features", "run", "--as-of", "yesterday-ish"], "--as-of"),
        (["features", "show", "bad id!"], "--user-ids[0]"),
        (["features", "show", "u1", "--at", "noon"], "--at"),
        (["features", "show"], "user_ids"),
        (["features", "show", "u1", "--feature-service", "tip_scorer_v9"], "--feature-service"),
        (["train", "--validation-days", "0"], "--validation-days"),
        (["train", "--as-of", "noon"], "--as-of"),
        (["train", "--min-rows", "1"], "--min-rows"),
        (["train", "--feature-service", "tip_scorer_v9"], "--feature-service"),
        # A look-alike: CYRILLIC SMALL LETTER ES in place of the Latin "c".
        (["train", "--feature-service", "tip_s\u0441orer_v2"], "--feature-service"),
        (["card", "--alias", "retired"], "--alias"),
        (["demo", "--users", "1"], "--users"),
        (["demo", "--days", "0"], "--days"),
    ],
)
def test_bad_arguments_are_named_and_nothing_is_written(tmp_path, args, named):
    home = tmp_path / "home"
    result = invoke(home, *args)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert not home.exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [("--online-store", "cassandra"), ("--redis-url", "not a url"), ("--bandit-store", "x")],
)
def test_bad_global_options_are_named(tmp_path, option, value):
    result = runner.invoke(app, [option, value, "--home", str(tmp_path / "h"), "features", "run"])
    assert result.exit_code == 2
    assert option in result.output
    assert not (tmp_path / "h").exists()


def test_every_setting_is_a_global_option_read_from_its_env_var():
    params = typer.main.get_command(app).params
    options = {p.opts[0]: p.envvar for p in params if p.envvar}
    assert options == {f"--{name.replace('_', '-')}": var for name, var in ENV_VARS.items()}


def test_a_bad_setting_from_the_environment_names_its_option(tmp_path):
    env = {ENV_VARS["bandit_store"]: "cassandra"}
    result = runner.invoke(app, ["--home", str(tmp_path / "h"), "features", "run"], env=env)
    assert result.exit_code == 2
    assert "--bandit-store" in result.output and ENV_VARS["bandit_store"] in result.output
    assert not (tmp_path / "h").exists()


def test_contract_check_passes_on_the_checked_in_contract():
    result = runner.invoke(app, ["features", "export-contract", "--check"])
    assert result.exit_code == 0, result.output
    assert "agrees" in result.output
