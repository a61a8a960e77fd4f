"""The released tip prompts, mirrored into MLflow's prompt registry so that MLflow can show
which prompt produced which candidates and scores.

service/generation/prompts.py is the source of truth; MLflow holds a copy. One registered
prompt, PROMPT_NAME, has one MLflow version per released version: a chat template (the system
text, the few-shot turns, the user template with {{facts}} and {{tasks}}) tagged with the
service's version name and content hash. MLflow numbers versions in registration order, so the
name tag, not the number, says which release a version is.

A released version never changes, so neither does its copy: `mirror_prompts` registers a
version only when MLflow has no copy of it, and refuses (PromptMirrorConflict) while a copy
differs from the code, since MLflow would then attribute results to a text that did not produce
them. `prompt_mirror_problems` lists the differences and the missing versions without
registering anything.
"""

from collections import defaultdict
from string import Formatter

from mlflow import MlflowClient
from mlflow.entities.model_registry import PromptVersion
from mlflow.tracing.constant import TraceTagKey
from mlflow.tracing.utils.prompt import update_linked_prompts_tag

from service.generation.prompts import PROMPTS, prompt_hash

PROMPT_NAME = "tip-prompt"
VERSION_TAG = "prompt_version"  # the service's name for the release, as on each cell's run
HASH_TAG = "prompt_hash"  # prompt_hash(version): what the service's tests pin
_PAGE = 100


class PromptMirrorConflict(ValueError):
    """MLflow's copy of a released prompt is not the code's; nothing was registered."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            "MLflow's prompt registry disagrees with service/generation/prompts.py, the source "
            "of truth; delete or retag the MLflow versions named below:\n  " + "\n  ".join(problems)
        )


def chat_template(version: str) -> list[dict[str, str]]:
    """`version` as MLflow's chat template: what render() sends, with the request's context
    left as the variables {{facts}} and {{tasks}}."""
    prompt = PROMPTS[version]
    messages = [{"role": "system", "content": prompt.system}]
    for example in prompt.examples:
        messages.append({"role": "user", "content": prompt.user_message(example.context)})
        messages.append({"role": "assistant", "content": example.tip})
    # Formatter yields the literal text with {{ }} already unescaped, then each field's name.
    user = "".join(
        literal + (f"{{{{{name}}}}}" if name else "")
        for literal, name, _, _ in Formatter().parse(prompt.user_template)
    )
    messages.append({"role": "user", "content": user})
    return messages


def _copies(client: MlflowClient) -> dict[str, list[PromptVersion]]:
    """MLflow's versions of PROMPT_NAME by their VERSION_TAG, oldest first."""
    if client.get_prompt(PROMPT_NAME) is None:
        return {}
    found: list[PromptVersion] = []
    token = None
    while True:
        page = client.search_prompt_versions(PROMPT_NAME, max_results=_PAGE, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            break
    by_release: dict[str, list[PromptVersion]] = defaultdict(list)
    for copy in sorted(found, key=lambda copy: int(copy.version)):
        by_release[copy.tags.get(VERSION_TAG, "")].append(copy)
    return by_release


def _conflicts(copies: dict[str, list[PromptVersion]]) -> list[str]:
    problems = []
    for version in PROMPTS:
        for copy in copies.get(version, ()):
            differs = [
                what
                for what, same in (
                    ("template", copy.template == chat_template(version)),
                    (f"{HASH_TAG} tag", copy.tags.get(HASH_TAG) == prompt_hash(version)),
                )
                if not same
            ]
            if differs:
                problems.append(
                    f"{copy.uri}, tagged {VERSION_TAG}={version}, differs from the code in its "
                    + " and ".join(differs)
                )
    return problems


def prompt_mirror_problems(client: MlflowClient) -> list[str]:
    """What keeps MLflow's prompt registry from being the code's released prompts: copies that
    differ from the code, and released versions with no copy. Empty when they agree."""
    copies = _copies(client)
    missing = [
        f"{version} has no copy in MLflow's prompt {PROMPT_NAME}"
        for version in PROMPTS
        if version not in copies
    ]
    return _conflicts(copies) + missing


def mirror_prompts(client: MlflowClient) -> dict[str, PromptVersion]:
    """Each released version's MLflow copy, registering those MLflow lacks, in PROMPTS order.

    Idempotent: a version with an identical copy is never registered again. Raises
    PromptMirrorConflict, registering nothing, while any copy differs from the code. Two
    mirrors racing may both register a version; the copies are identical and the oldest is
    the one returned, every time.
    """
    copies = _copies(client)
    if problems := _conflicts(copies):
        raise PromptMirrorConflict(problems)
    mirrored = {}
    for version in PROMPTS:
        if version in copies:
            mirrored[version] = copies[version][0]
            continue
        content_hash = prompt_hash(version)
        mirrored[version] = client.register_prompt(
            PROMPT_NAME,
            chat_template(version),
            commit_message=f"{version} from service/generation/prompts.py, sha256 {content_hash}",
            tags={VERSION_TAG: version, HASH_TAG: content_hash},
        )
    return mirrored


def run_link_tags(prompt: PromptVersion) -> dict[str, str]:
    """The tag by which MLflow links `prompt` to a run, for the run to be created with.

    MlflowClient.link_prompt_version_to_run writes this tag, and only it, with MLflow's own
    serializer used here; it costs a prompt read, a run read and a write per run, which a
    collect of thousands of cached cells would feel.
    """
    return {TraceTagKey.LINKED_PROMPTS: update_linked_prompts_tag(None, [prompt])}
