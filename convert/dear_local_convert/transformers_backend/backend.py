"""The transformers backend: the full-precision reference behind the runtime's protocol.

It implements the same ``Backend`` protocol as llama.cpp, so the reference is
decoded by the very same loop, with the same prompt and parser. The checkpoint's
own chat template (from ``tokenizer_config.json``) is rendered with the same
jinja2 code the llama.cpp backend uses on the GGUF's copy of it.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path

import numpy as np

from dear_local.backends.base import Backend
from dear_local.contract.stops import STOP_TOKENS
from dear_local.errors import UserInputError, missing_extra

# Token texts that end a turn in the model families dear-local supports.
DTYPES = {"bf16": "bfloat16", "fp32": "float32", "f32": "float32", "fp16": "float16", "f16": "float16"}


def _torch():
    try:
        import torch
    except ImportError:
        raise missing_extra("torch", "convert") from None
    return torch


def pick_device(device: str | None) -> str:
    torch = _torch()
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
    if device not in ("cuda", "cpu"):
        raise UserInputError(f"unknown device {device!r}; use cuda or cpu")
    return device


def device_name(device: str) -> str:
    torch = _torch()
    if device == "cuda":
        return torch.cuda.get_device_name()
    import platform

    return f"cpu ({platform.processor() or platform.machine()})"



def cache_kwarg(model) -> str:
    """The forward argument that takes a KV cache: ``cache`` since transformers 5 renamed
    ``past_key_values``, else ``past_key_values``. A PEFT wrapper is asked about its base model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return _cache_kwarg_of(type(base))


@functools.cache
def _cache_kwarg_of(cls) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"

class TransformersBackend(Backend):
    """A checkpoint in transformers; with ``lora``, a PEFT LoRA adapter directory applied through PEFT.

    The adapter stays unmerged (PEFT adds ``scale · B·(A·x)`` beside each adapted layer),
    as the adapter's authors run it.

    Raises:
        UserInputError: an unknown device or dtype.
        MissingExtraError: torch, transformers or (with ``lora``) peft are not installed.
    """

    name = "transformers"

    def __init__(
        self, checkpoint: str | Path, *, device: str | None = None, dtype: str = "bf16", lora: str | Path | None = None
    ) -> None:
        torch = _torch()
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise missing_extra("transformers", "convert") from None
        if dtype not in DTYPES:
            raise UserInputError(f"unknown dtype {dtype!r}; use one of: bf16, fp32, fp16")
        self._torch = torch
        self.device = pick_device(device)
        self.dtype = dtype
        path = Path(checkpoint)
        self.model_label = path.name
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, DTYPES[dtype]))
        if lora is not None:
            try:
                from peft import PeftModel
            except ImportError:
                raise missing_extra("peft", "convert") from None
            # the LoRA layers are injected into the model itself, which keeps its own forward
            self.peft_model = PeftModel.from_pretrained(self.model, str(lora))
            self.model = self.peft_model.get_base_model()
            self.model_label = f"{path.name} + {Path(lora).name}"
        self.model.to(self.device).eval()
        cfg = self.model.config
        self.n_ctx = int(getattr(cfg, "max_position_embeddings", 8192))
        self.n_vocab = int(cfg.vocab_size)
        self.chat_template = self.tok.chat_template if isinstance(self.tok.chat_template, str) else None
        self.bos_token = self.tok.bos_token or ""
        self.eos_token = self.tok.eos_token or ""
        self.add_bos = bool(self.tok("a", add_special_tokens=True)["input_ids"][:1] == [self.tok.bos_token_id])
        self.eog_ids = frozenset(self._end_ids())
        self._cache = None
        self._seq: list[int] = []
        params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = cache_kwarg(self.model)
        # Only the last position's logits are needed, except in ``extend_all``: asking for
        # fewer saves a prompt-length x vocabulary tensor.
        self._keep_kwarg = next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)

    def _end_ids(self) -> set[int]:
        ids: set[int] = set()
        gen = getattr(self.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tok.eos_token_id is not None:
            ids.add(self.tok.eos_token_id)
        vocab = self.tok.get_vocab()
        ids.update(vocab[t] for t in STOP_TOKENS if t in vocab)
        return ids

    # -- tokens -------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool, special: bool = False) -> list[int]:
        # Hugging Face tokenizers match special-token text inside a string unless
        # told to split it; the flag is passed either way, because the call
        # leaves it set on the shared tokenizer.
        ids = self.tok(text, add_special_tokens=False, split_special_tokens=not special)["input_ids"]
        if add_bos and self.tok.bos_token_id is not None:
            ids = [self.tok.bos_token_id, *ids]
        return list(ids)

    def special_token_ids(self) -> dict[str, int]:
        found = self.__dict__.get("_special_ids")
        if found is None:
            # Added tokens marked special are what split_special_tokens turns back
            # into text (llama.cpp's control tokens); the others match either way.
            found = {
                t.content: i for i, t in self.tok.added_tokens_decoder.items()
                if t.special and self.tokenize(t.content, add_bos=False, special=True) == [i]
            }
            self._special_ids = found
        return found

    def detokenize(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_text(self, tok: int) -> str:
        return self.tok.convert_ids_to_tokens(tok) or ""

    def token_bytes(self, tok: int) -> bytes:
        return self.vocab_pieces()[tok]

    def vocab_pieces(self) -> list[bytes]:
        """Exact bytes per token (byte-level BPE mapped back), as llama.cpp reports them."""
        pieces = self.__dict__.get("_vocab_pieces")
        if pieces is None:
            from dear_local_convert.transformers_backend.token_bytes import hf_token_pieces

            pieces = hf_token_pieces(self.tok)
            pieces += [b""] * (self.n_vocab - len(pieces))
            self._vocab_pieces = pieces
        return pieces

    # -- evaluation state ---------------------------------------------------
    def _forward(self, ids: list[int], rows: list[int] | None = None) -> np.ndarray:
        """Run ``ids``; the logits after the last one, or after each ``ids[i]`` for ``i`` in ``rows``."""
        torch = self._torch
        from transformers import DynamicCache

        if self._cache is None:
            self._cache = DynamicCache()
        kwargs = {self._cache_kwarg: self._cache}
        if self._keep_kwarg:
            # An int keeps that many last positions; a tensor keeps those positions.
            kwargs[self._keep_kwarg] = 1 if rows is None else torch.tensor(rows, device=self.device)
        with torch.inference_mode():
            x = torch.tensor([ids], dtype=torch.long, device=self.device)
            out = self.model(input_ids=x, use_cache=True, **kwargs)
        self._seq.extend(ids)
        logits = out.logits[0].float().cpu().numpy()
        if rows is None:
            return logits[-1]
        return logits if self._keep_kwarg else logits[rows]

    def prefill(self, ids: list[int]) -> np.ndarray:
        self._cache = None
        self._seq = []
        return self._forward(ids)

    def extend(self, ids: list[int]) -> np.ndarray:
        return self._forward(ids)

    def extend_rows(self, ids: list[int], rows: list[int]) -> np.ndarray:
        return self._forward(ids, rows)

    def rewind(self, n_tokens: int) -> None:
        drop = len(self._seq) - n_tokens
        if self._cache is not None and drop > 0:
            # A negative length drops that many tokens, in transformers 4 and 5 alike.
            self._cache.crop(-drop)
        del self._seq[n_tokens:]

    @property
    def n_past(self) -> int:
        return len(self._seq)
