"""Render a model's own chat template (from GGUF or tokenizer_config.json) with jinja2.

This mirrors transformers' ``apply_chat_template``: a sandboxed environment with
``trim_blocks`` and ``lstrip_blocks``, ``raise_exception``, and the bos/eos
strings as variables. llama-cpp-python's fallback chat format is never used.
"""

from __future__ import annotations

from functools import lru_cache

from .errors import UserInputError


def _raise(message: str):
    raise UserInputError(f"the model's chat template refused the messages: {message}")


@lru_cache(maxsize=8)
def _compile(source: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def render_chat(
    source: str | None,
    messages: list[dict],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
) -> str:
    if not source:
        raise UserInputError(
            "this model has no chat template (tokenizer.chat_template), so it cannot use a chat "
            "prompt; use --template card, or convert the model with a tokenizer_config.json that has one"
        )
    return _compile(source).render(
        messages=messages,
        bos_token=bos_token,
        eos_token=eos_token,
        add_generation_prompt=add_generation_prompt,
    )
