"""Request bodies and response readers for the two server protocols dear-local speaks.

- ``llama-server``: llama.cpp's native API, ``POST /completion`` (prompt as a token-id array,
  ``n_probs``, ``cache_prompt``, ``return_tokens``), ``POST /tokenize``, ``GET /props``.
- ``openai``: the OpenAI-compatible ``POST /v1/completions`` that vLLM and SGLang serve
  (prompt as token ids, ``temperature: 0``, ``max_tokens``, ``logprobs``, ``logit_bias``),
  with vLLM's ``POST /tokenize`` and ``GET /version``. llama-server serves this protocol too.

Every request is stateless: the whole prompt goes with it, and the server's prefix cache
makes a request that shares a prefix with the previous one cost only its new tokens.
Three kinds of request cover the three decoding modes (see :mod:`dear_local.decoding.remote`):

- ``generate``: greedy generation of up to ``max_tokens`` tokens (``greedy`` mode);
- ``pick``: one greedy token restricted to an allowed set, enforced by ``logit_bias``
  (+``BIAS`` on each allowed token: ``constrained`` mode);
- ``top``: the top-``k`` log-probabilities of the next token, computed by the server from
  the raw logits over the whole vocabulary (``first-token`` mode).

This module only builds and reads JSON, so the shapes are tested without a server
(``tests/test_remote_fast.py``, against the shapes vLLM and llama.cpp document).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ServerError

BIAS = 100.0  # added to the allowed tokens' logits; vLLM clamps logit_bias to [-100, 100]
PROTOCOLS = ("llama-server", "openai")


@dataclass
class Generated:
    """Greedy output: token ids (end-of-generation tokens left out) and why it stopped
    (``eog`` at an end-of-generation token or stop word, ``budget`` at ``max_tokens``)."""

    token_ids: list[int]
    stop_reason: str


def _num(value) -> float:
    """A log-probability from JSON: servers write -inf (a probability of 0) as null."""
    return -math.inf if value is None else float(value)


def _token_id(entry: dict) -> int:
    """The id of a logprobs entry: llama.cpp's ``id``, or vLLM's ``token_id:N`` token text."""
    if "id" in entry:
        return int(entry["id"])
    return _id_from_text(entry.get("token", ""))


def _id_from_text(token: str) -> int:
    if isinstance(token, str) and token.startswith("token_id:"):
        return int(token[len("token_id:"):])
    raise ServerError(
        f"the server answered token {token!r} without its id; with vLLM, dear-local asks for "
        "return_tokens_as_token_ids, which needs vLLM 0.6 or newer"
    )


class _Protocol:
    """What both protocols share: reading a ``/tokenize`` answer."""

    @staticmethod
    def read_tokens(body: dict) -> list[int]:
        """The ids of a ``/tokenize`` answer (``{"tokens": [ids]}``, or with pieces ``[{id, piece}]``)."""
        return [int(t["id"]) if isinstance(t, dict) else int(t) for t in body.get("tokens", [])]


class LlamaServer(_Protocol):
    """llama.cpp's native protocol (``llama-server``)."""

    name = "llama-server"
    completion_path = "/completion"

    def _body(self, ids: list[int], n_predict: int, fresh: bool, **extra) -> dict:
        # Only the temperature sampler: with temperature 0 it keeps the first best token,
        # so ties go to the lowest id as in the local decoding loop. A window's first request
        # is ``fresh``: its prompt is evaluated from the start, whatever the slot's cache holds,
        # so its batches (and so its logits) do not depend on what ran before.
        return {"prompt": list(ids), "n_predict": n_predict, "temperature": 0.0, "samplers": ["temperature"],
                "cache_prompt": not fresh, "return_tokens": True, **extra}

    def generate(self, ids: list[int], max_tokens: int) -> dict:
        return self._body(ids, max_tokens, True)

    def read_generate(self, body: dict, eog: frozenset[int]) -> Generated:
        toks = [int(t) for t in body.get("tokens") or []]
        reason = "eog" if body.get("stop_type") in ("eos", "word") else "budget"
        return Generated([t for t in toks if t not in eog], reason)

    def pick(self, ids: list[int], allowed: list[int], fresh: bool = False) -> dict:
        return self._body(ids, 1, fresh, logit_bias=[[t, BIAS] for t in allowed])

    def read_pick(self, body: dict) -> int:
        toks = body.get("tokens") or []
        if not toks:
            raise ServerError("llama-server answered a one-token request with no token")
        return int(toks[0])

    def top(self, ids: list[int], k: int, fresh: bool = False) -> dict:
        return self._body(ids, 1, fresh, n_probs=k, post_sampling_probs=False)

    def read_top(self, body: dict) -> dict[int, float]:
        probs = body.get("completion_probabilities") or []
        if not probs:
            raise ServerError("llama-server sent no completion_probabilities; is it older than b4000?")
        return {_token_id(e): _num(e.get("logprob")) for e in probs[0].get("top_logprobs", [])}

    # -- start-up checks --------------------------------------------------------
    def tokenize(self, text: str) -> tuple[str, dict]:
        return "/tokenize", {"content": text, "add_special": False, "parse_special": True}


class OpenAI(_Protocol):
    """The OpenAI-compatible completions protocol (vLLM, SGLang, llama-server's ``/v1``)."""

    name = "openai"
    completion_path = "/v1/completions"

    def __init__(self, model: str = "") -> None:
        self.model = model  # the served model name; vLLM needs it in every request

    def _body(self, ids: list[int], max_tokens: int, logprobs: int, **extra) -> dict:
        body = {"prompt": list(ids), "max_tokens": max_tokens, "temperature": 0.0, "logprobs": logprobs,
                # vLLM: token ids in the logprobs, special tokens kept, no stop at EOS removed
                "return_tokens_as_token_ids": True, "skip_special_tokens": False, **extra}
        if self.model:
            body["model"] = self.model
        return body

    def generate(self, ids: list[int], max_tokens: int) -> dict:
        return self._body(ids, max_tokens, 1)

    @staticmethod
    def _choice(body: dict) -> dict:
        try:
            return body["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"the server's completion has no choices: {str(body)[:200]}") from None

    def _sampled(self, choice: dict) -> list[int]:
        lp = choice.get("logprobs") or {}
        if "content" in lp:  # llama-server's shape: [{id, token, logprob, top_logprobs}]
            return [_token_id(e) for e in lp["content"]]
        if "tokens" in lp:  # vLLM's (the legacy OpenAI shape): tokens as "token_id:N"
            return [_id_from_text(t) for t in lp["tokens"]]
        raise ServerError("the server's completion has no logprobs; it must support logprobs on /v1/completions")

    def read_generate(self, body: dict, eog: frozenset[int]) -> Generated:
        choice = self._choice(body)
        toks = self._sampled(choice)
        reason = "budget" if choice.get("finish_reason") == "length" else "eog"
        return Generated([t for t in toks if t not in eog], reason)

    def pick(self, ids: list[int], allowed: list[int], fresh: bool = False) -> dict:
        return self._body(ids, 1, 1, logit_bias={str(t): BIAS for t in allowed})

    def read_pick(self, body: dict) -> int:
        toks = self._sampled(self._choice(body))
        if not toks:
            raise ServerError("the server answered a one-token request with no token")
        return toks[0]

    def top(self, ids: list[int], k: int, fresh: bool = False) -> dict:
        return self._body(ids, 1, k)

    def read_top(self, body: dict) -> dict[int, float]:
        lp = self._choice(body).get("logprobs") or {}
        if "content" in lp:
            first = lp["content"][0] if lp["content"] else {}
            return {_token_id(e): _num(e.get("logprob")) for e in first.get("top_logprobs", [])}
        tops = lp.get("top_logprobs") or []
        if not tops:
            raise ServerError("the server's completion has no top_logprobs")
        return {_id_from_text(tok): _num(v) for tok, v in (tops[0] or {}).items()}

    def tokenize(self, text: str) -> tuple[str, dict]:
        # vLLM reads prompt/add_special_tokens; llama-server (which also serves /v1) content/parse_special.
        body = {"prompt": text, "add_special_tokens": False, "content": text, "parse_special": True}
        if self.model:
            body["model"] = self.model
        return "/tokenize", body


def protocol_for(name: str, model: str = ""):
    """The protocol object for ``name`` (``llama-server`` or ``openai``)."""
    if name == "llama-server":
        return LlamaServer()
    if name == "openai":
        return OpenAI(model)
    raise ServerError(f"unknown server protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
