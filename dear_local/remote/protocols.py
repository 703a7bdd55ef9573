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
(``tests/test_remote_protocols.py``, against the shapes vLLM and llama.cpp document). Every value
read from a reply is checked with :mod:`.replies` (ids in the vocabulary, log-probabilities
that are numbers), so a broken server gives a :class:`ServerError`, never bad ids for llama.cpp.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ServerError
from . import replies

BIAS = 100.0  # added to the allowed tokens' logits; vLLM clamps logit_bias to [-100, 100]
PROTOCOLS = ("llama-server", "openai")


@dataclass
class Generated:
    """Greedy output: token ids (end-of-generation tokens left out) and why it stopped
    (``eog`` at an end-of-generation token or stop word, ``budget`` at ``max_tokens``)."""

    token_ids: list[int]
    stop_reason: str


class _Protocol:
    """What both protocols share: the vocabulary size replies are checked against, and reading a
    ``/tokenize`` answer. ``n_vocab``: the local tokenizer's vocabulary size (None: any int32 id)."""

    name = ""

    def __init__(self, n_vocab: int | None = None) -> None:
        self.n_vocab = n_vocab

    def _id(self, value, what: str) -> int:
        return replies.token_id(value, what, self.n_vocab)

    def _entry_id(self, entry, what: str) -> int:
        """The id of a logprobs entry: llama.cpp's ``id``, or vLLM's ``token_id:N`` token text."""
        entry = replies.obj(entry, what)
        if "id" in entry:
            return self._id(entry["id"], f"{what}.id")
        return replies.id_from_text(entry.get("token", ""), f"{what}.token", self.n_vocab)

    def _top_map(self, entries, what: str) -> dict[int, float]:
        """``{id: logprob}`` of a list of ``{id, logprob}`` entries."""
        return {self._entry_id(e, f"{what}[{i}]"): replies.logprob(replies.obj(e, f"{what}[{i}]").get("logprob"),
                                                                      f"{what}[{i}].logprob")
                for i, e in enumerate(replies.items(entries, what))}

    def read_tokens(self, body: dict) -> list[int]:
        """The ids of a ``/tokenize`` answer (``{"tokens": [ids]}``, or with pieces ``[{id, piece}]``).

        Raises:
            ServerError: no ``tokens`` array, or an entry that is not a token id.
        """
        if "tokens" not in replies.obj(body, "/tokenize"):
            raise replies.bad("/tokenize", body, 'an object with "tokens"')
        out = []
        for i, t in enumerate(replies.items(body["tokens"], "/tokenize tokens")):
            what = f"/tokenize tokens[{i}]"
            out.append(self._id(replies.obj(t, what).get("id") if isinstance(t, dict) else t, what))
        return out


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

    def _tokens(self, body) -> list[int]:
        body = replies.obj(body, "/completion")
        if "tokens" not in body:
            raise ServerError("llama-server's /completion answer has no tokens; it needs return_tokens "
                              "(llama.cpp b4000 or newer)")
        return replies.token_ids(body["tokens"], "/completion tokens", self.n_vocab)

    def read_generate(self, body: dict, eog: frozenset[int]) -> Generated:
        toks = self._tokens(body)
        reason = "eog" if body.get("stop_type") in ("eos", "word") else "budget"
        return Generated([t for t in toks if t not in eog], reason)

    def pick(self, ids: list[int], allowed: list[int], fresh: bool = False) -> dict:
        return self._body(ids, 1, fresh, logit_bias=[[t, BIAS] for t in allowed])

    def read_pick(self, body: dict) -> int:
        toks = self._tokens(body)
        if not toks:
            raise ServerError("llama-server answered a one-token request with no token")
        return toks[0]

    def top(self, ids: list[int], k: int, fresh: bool = False) -> dict:
        return self._body(ids, 1, fresh, n_probs=k, post_sampling_probs=False)

    def read_top(self, body: dict) -> dict[int, float]:
        probs = replies.obj(body, "/completion").get("completion_probabilities") or []
        if not replies.items(probs, "/completion completion_probabilities"):
            raise ServerError("llama-server sent no completion_probabilities; is it older than b4000?")
        first = replies.obj(probs[0], "/completion completion_probabilities[0]")
        return self._top_map(first.get("top_logprobs", []), "/completion completion_probabilities[0].top_logprobs")

    # -- start-up checks --------------------------------------------------------
    def tokenize(self, text: str) -> tuple[str, dict]:
        return "/tokenize", {"content": text, "add_special": False, "parse_special": True}


class OpenAI(_Protocol):
    """The OpenAI-compatible completions protocol (vLLM, SGLang, llama-server's ``/v1``)."""

    name = "openai"
    completion_path = "/v1/completions"

    def __init__(self, model: str = "", n_vocab: int | None = None) -> None:
        super().__init__(n_vocab)
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
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or not choices:
            raise ServerError(f"the server's completion has no choices: {replies.show(body)}")
        return replies.obj(choices[0], "/v1/completions choices[0]")

    @staticmethod
    def _logprobs(choice: dict) -> dict:
        return replies.obj(choice.get("logprobs") or {}, "/v1/completions choices[0].logprobs")

    def _sampled(self, choice: dict) -> list[int]:
        lp = self._logprobs(choice)
        what = "/v1/completions choices[0].logprobs"
        if "content" in lp:  # llama-server's shape: [{id, token, logprob, top_logprobs}]
            return [self._entry_id(e, f"{what}.content[{i}]")
                    for i, e in enumerate(replies.items(lp["content"], f"{what}.content"))]
        if "tokens" in lp:  # vLLM's (the legacy OpenAI shape): tokens as "token_id:N"
            return [replies.id_from_text(t, f"{what}.tokens[{i}]", self.n_vocab)
                    for i, t in enumerate(replies.items(lp["tokens"], f"{what}.tokens"))]
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
        lp = self._logprobs(self._choice(body))
        what = "/v1/completions choices[0].logprobs"
        if "content" in lp:
            content = replies.items(lp["content"], f"{what}.content")
            first = replies.obj(content[0], f"{what}.content[0]") if content else {}
            return self._top_map(first.get("top_logprobs", []), f"{what}.content[0].top_logprobs")
        tops = lp.get("top_logprobs") or []
        if not replies.items(tops, f"{what}.top_logprobs"):
            raise ServerError("the server's completion has no top_logprobs")
        first = replies.obj(tops[0] or {}, f"{what}.top_logprobs[0]")
        return {replies.id_from_text(tok, f"{what}.top_logprobs[0] key", self.n_vocab):
                replies.logprob(v, f"{what}.top_logprobs[0][{tok!r}]") for tok, v in first.items()}

    def tokenize(self, text: str) -> tuple[str, dict]:
        # vLLM reads prompt/add_special_tokens; llama-server (which also serves /v1) content/parse_special.
        body = {"prompt": text, "add_special_tokens": False, "content": text, "parse_special": True}
        if self.model:
            body["model"] = self.model
        return "/tokenize", body


def protocol_for(name: str, model: str = "", n_vocab: int | None = None):
    """The protocol object for ``name`` (``llama-server`` or ``openai``); replies are checked
    against a vocabulary of ``n_vocab`` tokens."""
    if name == "llama-server":
        return LlamaServer(n_vocab)
    if name == "openai":
        return OpenAI(model, n_vocab)
    raise ServerError(f"unknown server protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
