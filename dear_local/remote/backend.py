"""A backend whose model runs on inference servers: llama-server, vLLM or SGLang.

The prompt is always dear-local's own: built with the tokenizer of a local model file
(a GGUF opened vocabulary-only, a few MB read), sent as token ids. At start every server
is asked to tokenize a probe text holding the template's markers, digits and brackets; a
server whose ids differ serves another tokenizer, and is refused before any work is done.
Decoding goes through :mod:`dear_local.decoding.remote`; requests go through a
:class:`~dear_local.remote.fleet.Fleet`.
"""

from __future__ import annotations

import threading

from ..backends.base import Capabilities, ModelRuntime
from ..decoding.remote import RemoteModel
from ..errors import ServerError
from ..settings import DEFAULT_REQUEST_TIMEOUT, DEFAULT_SERVER_RETRIES
from ..token_ids import first_difference
from . import replies
from .fleet import Fleet, Server
from .protocols import LlamaServer, OpenAI, protocol_for

PROBE_TEXT = "Rank the passages [0] to [19]: [12] > [3] > [0]. Query: café 2024?\n"


MAX_CTX = 2**31 - 1  # llama.cpp's n_ctx is an int32


def _text(value, default: str = "") -> str:
    """A name or version from a reply, as plain text (anything but a string or number gives ``default``)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return default
    return str(value)[:200]


def _ctx(value, what: str) -> int:
    """A context size from a reply, 0 to 2**31 - 1; 0 (or absent) means unknown: the local model's is used."""
    return 0 if value is None else replies.count(value, what, 0, MAX_CTX)


def _engine_llama_server(props: dict) -> dict:
    """What llama-server's ``GET /props`` says about its engine and model."""
    settings = props.get("default_generation_settings")
    settings = {} if settings is None else replies.obj(settings, "/props default_generation_settings")
    slots = props.get("total_slots")
    return {"engine": "llama-server", "version": _text(props.get("build_info"), "unknown"),
            "model": _text(props.get("model_path") or props.get("model_alias")),
            "n_ctx": _ctx(settings.get("n_ctx"), "/props default_generation_settings.n_ctx"),
            "slots": 1 if slots is None else replies.count(slots, "/props total_slots", 1, 2**20)}


def _engine_openai(fleet: Fleet, server: Server) -> dict:
    """What an OpenAI-protocol server's ``/v1/models`` and ``/version`` say about its engine and model."""
    models = replies.items(fleet.request("GET", "/v1/models", server=server, probe=True).get("data") or [{}],
                           "/v1/models data")
    first = replies.obj(models[0] if models else {}, "/v1/models data[0]")
    try:
        version = fleet.request("GET", "/version", server=server, probe=True).get("version", "unknown")
    except ServerError:
        version = "unknown"
    meta = first.get("meta") or {}
    n_ctx = first.get("max_model_len")
    if n_ctx is None and isinstance(meta, dict):
        n_ctx = meta.get("n_ctx_train")
    return {"engine": _text(first.get("owned_by")) or "openai-compatible", "version": _text(version, "unknown"),
            "model": _text(first.get("id")), "n_ctx": _ctx(n_ctx, "/v1/models data[0].max_model_len"), "slots": 1}


def engine_info(fleet: Fleet, server: Server, protocol: str) -> tuple[str, dict]:
    """The protocol (``auto`` resolved: ``llama-server`` when ``GET /props`` answers as llama.cpp
    does, else ``openai``) and what ``server`` says about its engine and model."""
    if protocol in ("auto", "llama-server"):
        try:
            props = fleet.request("GET", "/props", server=server, probe=True)
        except ServerError as exc:
            if exc.status is None or protocol == "llama-server":  # no answer at all, not a refusal
                raise
            props = {}
        if "default_generation_settings" in props or protocol == "llama-server":
            return "llama-server", _engine_llama_server(props)
    return "openai", _engine_openai(fleet, server)


# --n-ctx does nothing here: the context is the server's, per slot
CONTEXT_ADVICE = ("a server started with a larger per-slot context (llama-server -c/--ctx-size divided by "
                  "--parallel; vLLM --max-model-len)")


class RemoteBackend(ModelRuntime, RemoteModel):
    """Tokenizer from ``tokenizer`` (a local backend), model on the servers of ``fleet``.

    ``protocol``: ``auto`` (llama-server if the first server answers ``/props`` as llama.cpp
    does, else ``openai``), ``llama-server`` or ``openai``; ``served_model``: the model name
    for OpenAI-protocol servers (default: the first one ``/v1/models`` lists).

    Raises:
        ServerError: a server is unreachable, speaks another protocol, or tokenizes the
            probe text differently from ``tokenizer``.
    """

    name = "server"
    context_advice = CONTEXT_ADVICE
    capabilities = Capabilities(local_evaluation=False, concurrent_queries=True, context_advice=CONTEXT_ADVICE,
                                request_errors=True)

    def __init__(self, tokenizer: ModelRuntime, fleet: Fleet, *, protocol: str = "auto", served_model: str = "") -> None:
        self.tok = tokenizer
        self.fleet = fleet
        for attr in ("n_vocab", "add_bos", "bos_token", "eos_token", "eog_ids", "chat_template"):
            setattr(self, attr, getattr(tokenizer, attr))
        self._lock = threading.Lock()
        name, info = engine_info(fleet, fleet.servers[0], protocol)
        self.protocol = protocol_for(name, served_model or (info["model"] if name == "openai" else ""),
                                     tokenizer.n_vocab)
        self.engine = info
        self.n_ctx = info["n_ctx"] or tokenizer.n_ctx
        self.model_label = f"{getattr(tokenizer, 'model_label', '')} on {info['engine']} {info['version']}".strip()
        for server in fleet.servers:
            self._check_tokenizer(server)

    # -- start-up ---------------------------------------------------------------------
    def probe_text(self) -> str:
        markers = "".join(sorted(self.tok.special_token_ids())[:4])
        return markers + PROBE_TEXT + markers

    def _check_tokenizer(self, server: Server) -> None:
        text = self.probe_text()
        path, body = self.protocol.tokenize(text)
        try:
            theirs = self.protocol.read_tokens(self.fleet.request("POST", path, body, server=server, probe=True))
        except ServerError as exc:
            raise ServerError(f"{server.label} could not be checked: {exc}") from None
        ours = self.tok.tokenize(text, add_bos=False, special=True)
        if theirs != ours:
            at = first_difference(ours, theirs)
            raise ServerError(
                f"{server.label} serves a different tokenizer from {self.tok.model_label or 'the local model'}: "
                f"the probe text's ids differ from position {at} (here {ours[at:at + 5]}, there {theirs[at:at + 5]}); "
                "serve the same model (any quant of it), or pass the matching --model"
            )

    # -- tokens: the local tokenizer ------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool, special: bool = False) -> list[int]:
        with self._lock:
            return self.tok.tokenize(text, add_bos=add_bos, special=special)

    def special_token_ids(self) -> dict[str, int]:
        with self._lock:
            return self.tok.special_token_ids()

    def detokenize(self, ids: list[int]) -> str:
        with self._lock:
            return self.tok.detokenize(ids)

    def token_bytes(self, tok: int) -> bytes:
        with self._lock:
            return self.tok.token_bytes(tok)

    def vocab_pieces(self) -> list[bytes]:
        with self._lock:
            return self.tok.vocab_pieces()

    def token_text(self, tok: int) -> str:
        with self._lock:
            return self.tok.token_text(tok)

    # -- the model: requests ------------------------------------------------------------
    def _complete(self, body: dict, read):
        """Send a completion request and ``read`` its answer; a bad answer names the server."""
        reply = self.fleet.request("POST", self.protocol.completion_path, body)
        try:
            return read(reply)
        except ServerError as exc:
            raise ServerError(f"{self.fleet.thread_server_label()}: {exc}") from None

    def generate(self, ids: list[int], max_tokens: int) -> tuple[list[int], str]:
        got = self._complete(self.protocol.generate(ids, max_tokens),
                             lambda reply: self.protocol.read_generate(reply, self.eog_ids))
        return got.token_ids, got.stop_reason

    def pick(self, ids: list[int], allowed: list[int], fresh: bool = False) -> int:
        return self._complete(self.protocol.pick(ids, allowed, fresh), self.protocol.read_pick)

    def top(self, ids: list[int], candidates: list[int], fresh: bool = False) -> dict[int, float]:
        """Ask for the top ``k`` log-probabilities, ``k`` growing until every candidate is among them.

        Returns each candidate's log-probability: a number at most 0, or ``-inf`` where the
        server says its probability is 0.

        Raises:
            ServerError: the server refused, answered something that is not log-probabilities
                of token ids, or left a candidate out even when asked for the whole vocabulary.
                With a server that caps ``k`` (vLLM's ``--max-logprobs``, 20 by default) the cap
                must cover the candidates the model ranks lowest; the error says so.
        """
        k = min(max(2 * len(candidates), 20), self.n_vocab)
        while True:
            try:
                got = self._complete(self.protocol.top(ids, k, fresh), self.protocol.read_top)
                fresh = False  # asked again with a larger k: the prompt is in the cache now
            except ServerError as exc:
                if isinstance(self.protocol, OpenAI) and exc.status == 400 and "logprobs" in str(exc):
                    raise ServerError(
                        f"{exc}\nfirst-token decoding asks for up to {k} log-probabilities; start vLLM with "
                        "--max-logprobs -1 (or at least the vocabulary size), or use --decoding constrained"
                    ) from None
                raise
            if all(c in got for c in candidates):
                return {c: got[c] for c in candidates}
            if k >= self.n_vocab:
                missing = [c for c in candidates if c not in got]
                raise ServerError(
                    f"{self.fleet.thread_server_label()}: asked for the log-probabilities of all {k} tokens, the "
                    f"server left out {len(missing)} of the ids' tokens (such as {missing[0]}): it caps how many "
                    "log-probabilities it returns; lift the cap (vLLM: --max-logprobs -1) or use --decoding constrained"
                )
            k = min(k * 8, self.n_vocab)

    # -- the runtime around the requests -------------------------------------------------
    def rebind(self) -> None:
        """Send this thread's next requests to the least-used server (once per query)."""
        self.fleet.rebind()

    def start_query(self) -> None:
        self.rebind()  # each query starts on the least-used server, its windows stay there

    def request_error_count(self) -> int:
        return self.fleet.stats.error_count

    @property
    def server_urls(self) -> list[str]:
        """The URLs of the servers, as given."""
        return [s.url for s in self.fleet.servers]

    def close(self) -> None:
        self.fleet.close()
        self.tok.close()


def open_remote(tokenizer_model, urls: list[str], *, protocol: str = "auto", served_model: str = "",
                timeout: float = DEFAULT_REQUEST_TIMEOUT, retries: int = DEFAULT_SERVER_RETRIES, api_key: str | None = None,
                loader=None) -> RemoteBackend:
    """A :class:`RemoteBackend` for ``urls``, with the tokenizer of the GGUF at ``tokenizer_model``
    (opened vocabulary-only by ``loader``, default ``LlamaCppBackend``).

    Raises:
        ModelNotFoundError, InvalidModelFileError: the tokenizer's GGUF.
        ServerError: see :class:`RemoteBackend` and :class:`~dear_local.remote.fleet.Fleet`.
    """
    if loader is None:
        from ..backends.llama import LlamaCppBackend as loader

    fleet = Fleet(urls, timeout=timeout, retries=retries, api_key=api_key)
    tok = loader(tokenizer_model, vocab_only=True)
    try:
        return RemoteBackend(tok, fleet, protocol=protocol, served_model=served_model)
    except BaseException:
        fleet.close()
        tok.close()
        raise


__all__ = ["LlamaServer", "OpenAI", "RemoteBackend", "open_remote"]
