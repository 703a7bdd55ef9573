"""A pointwise ranker (DeAR-P) GGUF scored through llama.cpp embeddings.

The route: llama.cpp runs the Llama backbone with embeddings on and ``LLAMA_POOLING_TYPE_LAST``,
which returns, per sequence, the hidden state of its last token after the final norm: exactly
what Hugging Face's ``LlamaForSequenceClassification`` feeds its ``score`` head when nothing is
padded. The score is the head (``dear_local.pointwise.head``, float32 metadata written by
``dear-local convert``) dotted with that state, in numpy; no normalisation.

Many pairs go into one ``llama_decode`` as separate sequences (``batch`` documents per call,
in a unified KV cache), so 100 candidates take a few calls.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..contract.pointwise import PointwiseTemplate, cut_pair, get_pointwise_template
from ..errors import InvalidModelFileError, UserInputError
from ..gguf_file import POINTWISE, Keys, read_header
from .cpu_variant import ensure_cpu_backend
from .limits import check_load_settings
from .llama import _quiet_stderr, check_gguf_file, load_failed
from .loader import choose_cpu_buffers, open_llama

DEFAULT_BATCH = 8  # documents per llama.cpp call


class PointwiseModel:
    """A pointwise ranker GGUF, ready to score (query, document) pairs.

    ``batch`` is how many documents go into one llama.cpp call; each pair is at most the
    template's ``max_length`` tokens (228 for DeAR-P), so a call holds ``batch × max_length``
    tokens. ``n_threads``, ``cpu_buffers`` and ``flash_attn`` are as for
    :class:`~dear_local.backends.llama.LlamaCppBackend`. ``kv_f32`` keeps the KV cache in F32
    instead of llama.cpp's F16 (the exactness tests: an F32 GGUF then matches transformers
    fp32 to about 1e-5; with F16 keys and values, to about 1e-3).

    Raises:
        ModelNotFoundError, InvalidModelFileError: a missing or unloadable file.
        UserInputError: a listwise model (not a pointwise ranker), a bad ``batch``, a load
            setting out of range, an unknown pointwise template in the file.
    """

    name = "llama.cpp pointwise"

    def __init__(
        self,
        model_path: str | Path,
        *,
        batch: int = DEFAULT_BATCH,
        n_threads: int | None = None,
        cpu_buffers: str | None = None,
        flash_attn: bool = False,
        kv_f32: bool = False,
        verbose: bool = False,
    ) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= 256:
            raise UserInputError(f"the pointwise batch must be 1 to 256 documents per call, not {batch!r}")
        path = check_gguf_file(model_path)
        header = read_header(path, arrays={Keys.POINTWISE_HEAD})
        if header.get(Keys.KIND) != POINTWISE:
            raise UserInputError(
                f"{path.name} is not a pointwise ranker (it has no {Keys.KIND} = {POINTWISE!r}); pass a DeAR-P "
                "GGUF converted by `dear-local convert` as --first-stage, or pass this model as --model"
            )
        head = header.get(Keys.POINTWISE_HEAD)
        if not isinstance(head, list) or not head or not all(isinstance(v, float) for v in head):
            raise InvalidModelFileError(
                f"{path.name} marks itself a pointwise ranker but its score head ({Keys.POINTWISE_HEAD}) is "
                "missing or not numbers; re-convert the checkpoint with `dear-local convert`"
            )
        self.template: PointwiseTemplate = get_pointwise_template(str(header.get(Keys.POINTWISE_TEMPLATE, "")))
        self.head = np.asarray(head, dtype=np.float32)
        self.path = path
        self.model_label = path.name
        self.batch = batch
        n_tokens = batch * self.template.max_length
        check_load_settings(n_ctx=n_tokens, n_threads=n_threads, n_gpu_layers=0, n_batch=n_tokens)
        self.cpu_buffers = choose_cpu_buffers(cpu_buffers)
        ensure_cpu_backend()
        from ..llama_cpp_lib import LogCapture

        try:
            # llama.cpp logs through its callback as well as on fd 2 (a warning that the GGUF names no
            # pooling type of its own, for one): both are kept off the terminal unless verbose
            with _quiet_stderr(not verbose), (LogCapture() if not verbose else contextlib.nullcontext()):
                self.llm, _ = open_llama(
                    path,
                    cpu_buffers=self.cpu_buffers.mode,
                    embedding=True,
                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
                    n_ctx=n_tokens,
                    n_batch=n_tokens,
                    n_ubatch=n_tokens,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    verbose=verbose,
                    **({"flash_attn": True} if flash_attn else {}),
                    **({"type_k": 0, "type_v": 0} if kv_f32 else {}),  # GGML_TYPE_F32
                )
        except (ValueError, RuntimeError) as exc:
            raise load_failed(path, exc) from exc
        n_embd = self.llm.n_embd()
        if n_embd != len(self.head):
            self.close()
            raise InvalidModelFileError(
                f"{path.name}'s score head has {len(self.head)} weights but the model's hidden size is {n_embd}; "
                "re-convert the checkpoint with `dear-local convert`"
            )
        model = self.llm._model
        bos = model.token_bos()
        self.bos_id = bos if bos >= 0 else None

    def _tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def pair(self, query: str, text: str, title: str = "") -> tuple[list[int], bool]:
        """The token ids the model reads for one pair, and whether the document was cut
        (see :func:`dear_local.contract.pointwise.cut_pair`)."""
        return cut_pair(self._tokenize, self.bos_id, self.template, query, text, title)

    def pair_ids(self, query: str, text: str, title: str = "") -> list[int]:
        """The token ids the model reads for one pair."""
        return self.pair(query, text, title)[0]

    def score_ids(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Raw scores (the head's logit, float32, shape ``(len(sequences),)``) for pairs already tokenized.

        Sequences go ``self.batch`` to a llama.cpp call; each must be 1 to ``max_length`` ids.

        Raises:
            UserInputError: an empty sequence, or one longer than the template allows.
        """
        limit = self.template.max_length
        for s in sequences:
            if not 1 <= len(s) <= limit:
                raise UserInputError(f"a pointwise input must be 1 to {limit} tokens, not {len(s)}")
        out = np.empty(len(sequences), dtype=np.float32)
        lib, ctx, batch = self._llama_cpp, self.llm._ctx, self.llm._batch
        n_embd = len(self.head)
        for start in range(0, len(sequences), self.batch):
            chunk = sequences[start : start + self.batch]
            batch.reset()
            for seq_id, ids in enumerate(chunk):
                batch.add_sequence(list(ids), seq_id, True)
            ctx.kv_cache_clear()
            ctx.decode(batch)
            for seq_id in range(len(chunk)):
                ptr = lib.llama_get_embeddings_seq(ctx.ctx, seq_id)
                hidden = np.ctypeslib.as_array(ptr, shape=(n_embd,))
                out[start + seq_id] = float(hidden.astype(np.float32) @ self.head)
            batch.reset()
        return out

    def score(self, query: str, texts: Sequence[str], titles: Sequence[str] | None = None) -> np.ndarray:
        """Raw scores for ``texts`` against ``query``, in input order (float32, shape ``(len(texts),)``)."""
        titles = titles if titles is not None else [""] * len(texts)
        return self.score_ids([self.pair_ids(query, t, title) for t, title in zip(texts, titles)])

    def close(self) -> None:
        llm = self.__dict__.pop("llm", None)
        if llm is not None:
            llm.close()

    def __enter__(self) -> "PointwiseModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
