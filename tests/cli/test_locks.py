"""The two pinned sets: requirements.lock (runtime + dev, what `make` installs) and
requirements-runtime.lock (what a Bento installs), resolved from it with `-c requirements.lock`.

The runtime set must pin the same versions as the full one, hold everything the runtime
dependencies need (walked through the installed packages' own metadata, extras included),
and none of the dev extra: a test tool in the serving image is weight and attack surface.
"""

import re
import tomllib
from importlib import metadata

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tipml.serving import PROJECT_DIR

FULL = PROJECT_DIR / "requirements.lock"
RUNTIME = PROJECT_DIR / "requirements-runtime.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)


def pins(path) -> dict[str, str]:
    return {canonicalize_name(name): version for name, version in PIN.findall(path.read_text())}


def project() -> dict:
    return tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())["project"]


def needed(requirements: list[Requirement]) -> set[str]:
    """Every distribution these requirements pull in on this interpreter, extras included."""
    seen: set[tuple[str, frozenset[str]]] = set()
    found: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in requirements if not r.marker or r.marker.evaluate()]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        found.add(name)
        for text in metadata.requires(name) or []:
            child = Requirement(text)
            wanted = ("", *extras)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in wanted):
                todo.append((child, frozenset(child.extras)))
    return found


def test_the_runtime_set_pins_what_the_full_set_pins():
    full, runtime = pins(FULL), pins(RUNTIME)
    assert runtime, "requirements-runtime.lock pins nothing"
    assert {n: v for n, v in runtime.items() if full.get(n) != v} == {}


def test_the_runtime_set_holds_every_runtime_dependency_and_what_they_need():
    runtime = pins(RUNTIME)
    wanted = needed([Requirement(r) for r in project()["dependencies"]])
    assert wanted - set(runtime) == set()


def test_the_runtime_set_holds_nothing_only_the_dev_extra_needs():
    runtime = set(pins(RUNTIME))
    extra = project()["optional-dependencies"]["dev"]
    only_dev = needed([Requirement(r) for r in extra]) - needed(
        [Requirement(r) for r in project()["dependencies"]]
    )
    assert {"pytest", "moto", "ipykernel", "ruff"} <= only_dev  # the walk sees the extra
    assert only_dev & runtime == set()


def test_the_bento_installs_the_runtime_set():
    bentofile = yaml.safe_load((PROJECT_DIR / "bentofile.yaml").read_text())
    assert (PROJECT_DIR / bentofile["python"]["requirements_txt"]).resolve() == RUNTIME
