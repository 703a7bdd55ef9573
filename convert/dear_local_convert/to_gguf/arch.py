"""Read a Hugging Face Llama ``config.json`` into the numbers a GGUF file needs.

Both config styles are accepted:

- transformers 4.x: ``rope_theta`` plus ``rope_scaling: {rope_type: llama3, factor, ...}``;
- transformers 5.x: ``rope_parameters: {rope_type, rope_theta, factor, ...}``.

Llama-3.1's ``llama3`` rope scaling becomes a ``rope_freqs.weight`` tensor
(one divisor per rotary frequency), which is how llama.cpp applies it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dear_local.errors import ConversionError

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "LlamaForSequenceClassification")
# A sequence-classification checkpoint with one label is a pointwise ranker (DeAR-P): a Llama
# backbone plus a ``score`` head (Linear hidden -> 1, no bias) on the last token.
POINTWISE_ARCHITECTURE = "LlamaForSequenceClassification"


@dataclass(frozen=True)
class RopeScaling:
    """llama3-style rope scaling (the only kind Llama-3.x checkpoints use)."""

    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


@dataclass(frozen=True)
class LlamaParams:
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    tied_embeddings: bool
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    pointwise: bool = False  # a LlamaForSequenceClassification with one label: no lm_head, a score head

    @property
    def needs_output(self) -> bool:
        """Whether the checkpoint must hold an ``lm_head`` (untied causal models only)."""
        return not self.tied_embeddings and not self.pointwise

    def rope_freqs(self) -> np.ndarray | None:
        """The ``rope_freqs.weight`` values (F32, ``head_dim // 2``), or None without llama3 scaling."""
        if self.rope_scaling is None:
            return None
        return llama3_rope_factors(self.rope_theta, self.head_dim, self.rope_scaling)


def llama3_rope_factors(theta: float, head_dim: int, s: RopeScaling) -> np.ndarray:
    """Per-frequency divisors for llama3 rope scaling.

    High frequencies (short wavelengths) are kept, low frequencies are divided by
    ``factor``, and the band between is interpolated smoothly. llama.cpp divides
    each rotary frequency by the matching entry.
    """
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    low_wavelen = s.original_max_position_embeddings / s.low_freq_factor
    high_wavelen = s.original_max_position_embeddings / s.high_freq_factor
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(s.factor)
        else:
            smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) / (
                s.high_freq_factor - s.low_freq_factor
            )
            out.append(1.0 / ((1.0 - smooth) / s.factor + smooth))
    return np.asarray(out, dtype=np.float32)


def read_config(src_dir: Path) -> dict:
    path = Path(src_dir) / "config.json"
    if not path.is_file():
        raise ConversionError(
            f"{src_dir} has no config.json; pass the directory of a Hugging Face checkpoint"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path} is not valid JSON ({exc}); re-download the checkpoint") from exc


def check_architecture(config: dict) -> None:
    archs = config.get("architectures") or []
    if not any(a in SUPPORTED_ARCHITECTURES for a in archs):
        found = ", ".join(archs) or f"model_type {config.get('model_type')!r}"
        raise ConversionError(
            f"architecture {found} is not supported; dear-local converts "
            f"{', '.join(SUPPORTED_ARCHITECTURES)} checkpoints only (Llama 3/3.1/3.2, DeAR-8B, DeAR-P, SmolLM2)"
        )


def is_pointwise(config: dict) -> bool:
    """Whether ``config.json`` describes a sequence-classification (pointwise ranker) checkpoint."""
    return POINTWISE_ARCHITECTURE in (config.get("architectures") or [])


def check_labels(config: dict) -> None:
    """A pointwise ranker has one label (one score per pair); anything else is a classifier dear-local cannot rank with.

    Raises:
        ConversionError: ``num_labels`` (or the size of ``id2label``) is not 1.
    """
    labels = config.get("id2label")
    n = len(labels) if isinstance(labels, dict) and labels else config.get("num_labels", 2)
    if n != 1:
        raise ConversionError(
            f"this LlamaForSequenceClassification checkpoint has {n} labels; dear-local converts pointwise "
            "rankers with one label (num_labels=1, one relevance score per pair), as DeAR-P is"
        )


def _rope(config: dict) -> tuple[float, RopeScaling | None]:
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or params
    theta = config.get("rope_theta", params.get("rope_theta", 10000.0))
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind in (None, "default"):
        return float(theta), None
    if kind != "llama3":
        raise ConversionError(
            f"rope scaling type {kind!r} is not supported; dear-local handles Llama-3.x "
            "checkpoints (no scaling, or rope_type 'llama3')"
        )
    try:
        s = RopeScaling(
            factor=float(scaling["factor"]),
            low_freq_factor=float(scaling.get("low_freq_factor", 1.0)),
            high_freq_factor=float(scaling.get("high_freq_factor", 4.0)),
            original_max_position_embeddings=int(scaling["original_max_position_embeddings"]),
        )
    except KeyError as exc:
        raise ConversionError(f"config.json's llama3 rope scaling lacks {exc}; the config is incomplete") from exc
    return float(theta), s


def _ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)


def parse_params(config: dict) -> LlamaParams:
    """Turn a checked ``config.json`` into :class:`LlamaParams`."""
    check_architecture(config)
    try:
        n_embd = int(config["hidden_size"])
        n_head = int(config["num_attention_heads"])
        params = dict(
            n_vocab=int(config["vocab_size"]),
            n_embd=n_embd,
            n_layer=int(config["num_hidden_layers"]),
            n_head=n_head,
            n_head_kv=int(config.get("num_key_value_heads") or n_head),
            head_dim=int(config.get("head_dim") or n_embd // n_head),
            n_ff=int(config["intermediate_size"]),
            n_ctx=int(config.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        )
    except KeyError as exc:
        raise ConversionError(f"config.json lacks {exc}; it is not a complete Llama config") from exc
    theta, scaling = _rope(config)
    pointwise = is_pointwise(config)
    if pointwise:
        check_labels(config)
    return LlamaParams(
        **params,
        rope_theta=theta,
        rope_scaling=scaling,
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        bos_token_id=config.get("bos_token_id"),
        eos_token_ids=_ids(config.get("eos_token_id")),
        pointwise=pointwise,
    )
