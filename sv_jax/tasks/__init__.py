"""Where questions and answers come from, and how an answer is graded."""

from __future__ import annotations

import ml_collections

from sv_jax.trajectory import Cues


def fill(template: str, **values: str) -> str:
    """`template` with each `{name}` replaced; other braces (LaTeX's `\\boxed{}`) stay as written."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


def response_format(config: ml_collections.ConfigDict) -> tuple[str, Cues]:
    """The prompt template and cue phrases of the policy's responses: a questions file's
    (`config.data.prompt`, `config.data.cues`), or the built-in task's own shorter ones."""
    if config.data.questions:
        return config.data.prompt, Cues.from_config(config.data.cues)
    from sv_jax.tasks import builtin

    return builtin.PROMPT, builtin.CUES
