"""The released prompt versions, by name: what a request, an event or an experiment may name.

Their texts live in service/generation/prompts.py, which checks at import that it releases
exactly these.
The names live apart because every entry point validates them, and the texts' module imports
the feature definitions (Feast), which an event consumer should not pay for.
"""

from typing import Annotated

from pydantic import AfterValidator, Field

RELEASED_PROMPT_VERSIONS: tuple[str, ...] = ("v1", "v2-mentor", "v3-few-shot")
# What a request that names no version gets (unless the environment variable of the same name
# says otherwise), and what experiment reports compare with when an experiment names no control.
DEFAULT_PROMPT_VERSION = "v1"

# The shape of a version name, released or not (a stored arm of a retired version).
PromptVersionName = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9.-]*$")
]


def _released(version: str) -> str:
    if version not in RELEASED_PROMPT_VERSIONS:
        known = ", ".join(RELEASED_PROMPT_VERSIONS)
        # The shape check ran first: the value quoted is at most 64 of [a-z0-9.-].
        raise ValueError(f"unknown prompt version {version!r}; known versions: {known}")
    return version


ReleasedPromptVersion = Annotated[PromptVersionName, AfterValidator(_released)]
