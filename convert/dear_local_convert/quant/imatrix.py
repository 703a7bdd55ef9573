"""Collect a ranking-calibrated importance matrix during a transformers pass.

A forward pre-hook on every ``nn.Linear`` adds up, per input column, the
squares of the activations the layer receives, and counts the tokens: the same
statistic llama.cpp's ``llama-imatrix`` gathers from its matrix multiplications
(``in_sum2`` and ``counts``; the quantizer weighs column ``j`` by their ratio).
Each Linear is filed under the GGUF name of its weight (``blk.N.attn_q.weight``,
``output.weight``), found with ``gguf.TensorNameMap`` exactly as the converter
names it, so the matrix lines up with the converted model. The converter's
q/k row permutation reorders output rows only, so input columns need no fix-up.

The text is what the model reads when it ranks: every window of a calibration
slice, rendered with the model's profile, and decoded with that profile's
decoding mode, so the prompt and the model's own answer tokens are both
counted. Unlike llama-imatrix, short batches (single decode steps) are counted
too. With tied embeddings there is no ``output.weight`` in the GGUF, and the
head is left out, as llama-imatrix does.

The calibration slice must not share queries with the evaluation slice:
:func:`check_disjoint` refuses the same slice, or any query text in both.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable

import numpy as np

from dear_local.contract import Profile
from dear_local.errors import ConversionError, UserInputError

from dear_local_convert.quant.imatrix_file import Imatrix

DEFAULT_CALIBRATION_SLICE = "dl19-top20"
DEFAULT_EVAL_SLICE = "noveleval"


# -- names ------------------------------------------------------------------------------------


def gguf_weight_names(model) -> dict[str, str]:
    """``{HF module name: GGUF weight name}`` for every Linear of a Llama model; fail on any unmapped."""
    import gguf
    import torch

    cfg = model.config
    name_map = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, int(cfg.num_hidden_layers))
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    out, unmapped = {}, []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        mapped = name_map.get_type_and_name(f"{name}.weight", try_suffixes=(".weight",))
        if mapped is None:
            unmapped.append(name)
            continue
        kind, gguf_name = mapped
        if kind == gguf.MODEL_TENSOR.OUTPUT and tied:
            continue  # the GGUF has no output.weight: llama.cpp reuses token_embd
        out[name] = gguf_name
    if unmapped:
        raise ConversionError(
            f"{len(unmapped)} Linear layer(s) have no llama GGUF name: {', '.join(unmapped[:5])}; "
            "this is not a plain LlamaForCausalLM checkpoint"
        )
    if not out:
        raise ConversionError("the model has no Linear layers to calibrate; is it a LlamaForCausalLM?")
    return out


# -- hooks ------------------------------------------------------------------------------------


class ImatrixCollector:
    """Forward pre-hooks that sum x² per input column, and count tokens, for each named Linear.

    Use as a context manager around the forward passes to measure::

        with ImatrixCollector(model, gguf_weight_names(model)) as c:
            model(ids)
        sums, counts = c.sums(), c.counts()

    Sums are kept in float64 on the model's device, so long runs do not lose precision.
    """

    def __init__(self, model, names: dict[str, str]) -> None:
        self.model = model
        self.names = dict(names)
        self._sums: dict[str, object] = {}
        self._counts: dict[str, int] = {}
        self._handles: list = []

    def _hook(self, gguf_name: str):
        torch = self._torch

        def pre_hook(module, args):
            x = args[0].detach()
            flat = x.reshape(-1, x.shape[-1]).to(torch.float32)
            s = flat.pow(2).sum(dim=0, dtype=torch.float64)
            if gguf_name in self._sums:
                self._sums[gguf_name] += s
            else:
                self._sums[gguf_name] = s
            self._counts[gguf_name] = self._counts.get(gguf_name, 0) + flat.shape[0]

        return pre_hook

    def __enter__(self) -> "ImatrixCollector":
        import torch

        self._torch = torch
        modules = dict(self.model.named_modules())
        missing = [n for n in self.names if n not in modules]
        if missing:
            raise ConversionError(f"the model has no module(s) {missing[:3]}")
        for hf_name, gguf_name in self.names.items():
            self._handles.append(modules[hf_name].register_forward_pre_hook(self._hook(gguf_name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def sums(self) -> dict[str, np.ndarray]:
        return {n: s.cpu().numpy() for n, s in self._sums.items()}

    def counts(self) -> dict[str, int]:
        return dict(self._counts)


# -- calibration and evaluation must not overlap ----------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def query_hashes(eval_slice) -> list[str]:
    """sha256 of each query's normalised text (case and whitespace folded)."""
    return [hashlib.sha256(_norm(q.text).encode("utf-8")).hexdigest() for q in eval_slice.queries]


def check_disjoint(calibration, evaluation) -> None:
    """Refuse a calibration slice that is the evaluation slice or shares a query text with it.

    ``calibration`` is a loaded slice, or the ``calibration`` dict of an imatrix file
    (which keeps a hash of every query text); ``evaluation`` is a loaded slice.
    """
    if isinstance(calibration, dict):
        name, hashes = calibration.get("slice"), set(calibration.get("query_sha256", []))
    else:
        name, hashes = calibration.name, set(query_hashes(calibration))
    if name == evaluation.name:
        raise UserInputError(
            f"the calibration slice {name!r} is the evaluation slice; calibrate on a slice the evaluation "
            f"never sees: --slice {DEFAULT_CALIBRATION_SLICE} with evaluation on {DEFAULT_EVAL_SLICE}"
        )
    shared = [q for q, h in zip(evaluation.queries, query_hashes(evaluation)) if h in hashes]
    if shared:
        shown = "; ".join(repr(q.text[:60]) for q in shared[:3])
        raise UserInputError(
            f"the calibration slice {name!r} shares {len(shared)} query text(s) with the evaluation slice "
            f"{evaluation.name!r} ({shown}); calibrate on a disjoint slice, e.g. --slice "
            f"{DEFAULT_CALIBRATION_SLICE} with evaluation on {DEFAULT_EVAL_SLICE}"
        )


# -- the calibration run ----------------------------------------------------------------------


def collect_imatrix(
    checkpoint: str | Path,
    calibration_slice,
    profile: Profile,
    *,
    eval_slice=None,
    device: str | None = None,
    dtype: str = "bf16",
    model: dict | None = None,
    on_query: Callable[[int], None] | None = None,
) -> Imatrix:
    """Rank every query of ``calibration_slice`` in transformers with hooks on; return the matrix.

    ``eval_slice`` (a loaded slice), when given, is checked to be disjoint first.
    ``model`` is recorded as provenance (e.g. ``{"name", "repo", "revision"}``).
    ``on_query(n_tokens)`` is called after each query.
    """
    from dear_local.engine import rank_documents

    from dear_local_convert.transformers_backend.backend import TransformersBackend

    if eval_slice is not None:
        check_disjoint(calibration_slice, eval_slice)
    backend = TransformersBackend(checkpoint, device=device, dtype=dtype)
    names = gguf_weight_names(backend.model)
    windows = 0
    with ImatrixCollector(backend.model, names) as collector:
        for q in calibration_slice.queries:
            before = _tokens(collector)
            ranking = rank_documents(backend, profile, q.text, list(q.passages))
            windows += len(ranking.windows)
            if on_query is not None:
                on_query(_tokens(collector) - before)
    counts = collector.counts()
    if not counts:
        raise UserInputError("the calibration slice produced no tokens; use a slice with queries and passages")
    tokens = max(counts.values())
    s = calibration_slice
    calibration = {
        "slice": s.name,
        "slice_sha256": s.sha256,
        "queries": len(s.queries),
        "passages": s.passages_per_query,
        "query_sha256": query_hashes(s),
        "profile": profile.to_dict(),
        "model": {"checkpoint": str(checkpoint), **(model or {})},
        "dtype": dtype,
        "device": backend.device,
        "windows": windows,
        "tokens": tokens,
    }
    return Imatrix(
        sums=collector.sums(),
        counts=counts,
        datasets=[f"dear-local:{s.name} ({len(s.queries)} queries x {s.passages_per_query} passages, "
                  f"{profile.template}/{profile.decoding})"],
        chunk_count=windows,
        chunk_size=round(tokens / windows) if windows else 0,
        calibration=calibration,
    )


def _tokens(collector: ImatrixCollector) -> int:
    counts = collector.counts()
    return max(counts.values()) if counts else 0


def make_imatrix(
    checkpoint: str | Path,
    out: str | Path,
    profile: Profile,
    *,
    slice_name: str = DEFAULT_CALIBRATION_SLICE,
    queries: int | None = None,
    passages: int | None = None,
    eval_slice_name: str | None = DEFAULT_EVAL_SLICE,
    device: str | None = None,
    dtype: str = "bf16",
    model: dict | None = None,
    force: bool = False,
    on_query: Callable[[int], None] | None = None,
) -> Path:
    """Load the calibration slice, refuse overlap with the (whole) eval slice, collect, write the file."""
    from dear_local.fileio import refuse_overwrite

    from dear_local_convert.quant.imatrix_file import write_imatrix
    from dear_local_convert.slices import load_slice

    out = Path(out)
    refuse_overwrite(out, force)  # before the long run, not after it
    calibration = load_slice(slice_name, queries=queries, passages=passages)
    evaluation = load_slice(eval_slice_name) if eval_slice_name else None
    matrix = collect_imatrix(
        checkpoint, calibration, profile, eval_slice=evaluation, device=device, dtype=dtype, model=model,
        on_query=on_query,
    )
    return write_imatrix(matrix, out, force=force)
