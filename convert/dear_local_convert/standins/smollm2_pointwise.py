"""A pointwise stand-in built on SmolLM2: the stand-in checkpoint as a one-label sequence classifier.

DeAR-P is a Llama backbone with a ``score`` head (Linear hidden -> 1, no bias) read on the last
token, and a tokenizer whose pair template puts the begin-of-text token before each segment.
This builds the same thing on the SmolLM2 stand-in (:mod:`.smollm2`): its real weights, a
``LlamaForSequenceClassification`` config with one label, a random head (seeded), and
SmolLM2's tokenizer given DeAR-P's pair template with SmolLM2's own ``<|im_start|>`` as the
segment token. Only the head is random, so its hidden states are a real model's; with the tiny
random Llama-3 (:mod:`.tiny_llama3`) it covers a second vocabulary and pre-tokenizer.

The result is cached: built once into ``<dir>.partial`` and renamed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dear_local.errors import missing_extra
from dear_local.fileio import atomic_dir

from dear_local_convert.standins.smollm2 import COMPLETE


def build_smollm2_pointwise(standin_dir: str | Path, out_dir: str | Path, *, seed: int = 0) -> Path:
    """Build (once) the SmolLM2 pointwise stand-in from the stand-in checkpoint in ``standin_dir``.

    Returns ``out_dir``. The head is ``N(0, 1/hidden)`` per weight with ``seed``.
    """
    try:
        import torch
        from safetensors.torch import load_file, save_file
    except ImportError as exc:
        raise missing_extra(exc.name or "torch", "convert") from exc

    out = Path(out_dir).expanduser()
    if (out / COMPLETE).is_file():
        return out
    src = Path(standin_dir)
    with atomic_dir(out) as tmp:
        config = json.loads((src / "config.json").read_text(encoding="utf-8"))
        hidden = int(config["hidden_size"])
        tensors = load_file(src / "model.safetensors")
        gen = torch.Generator().manual_seed(seed)
        tensors["score.weight"] = (torch.randn((1, hidden), generator=gen) / hidden ** 0.5).to(torch.bfloat16)
        save_file(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        config.update(architectures=["LlamaForSequenceClassification"], id2label={"0": "LABEL_0"},
                      label2id={"LABEL_0": 0}, pad_token_id=config.get("eos_token_id"))
        (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        for name in ("tokenizer_config.json", "generation_config.json"):
            if (src / name).is_file():
                shutil.copyfile(src / name, tmp / name)
        _pair_template(src / "tokenizer.json", tmp / "tokenizer.json", config["bos_token_id"])
        (tmp / COMPLETE).write_text("SmolLM2 pointwise stand-in (random score head)\n", encoding="utf-8")
    return out


def _pair_template(src: Path, dst: Path, bos_id: int) -> None:
    """SmolLM2's tokenizer.json with DeAR-P's pair template: ``<bos> A <bos> B`` (``<bos> A`` alone)."""
    tj = json.loads(src.read_text(encoding="utf-8"))
    bos = next(a["content"] for a in tj["added_tokens"] if a["id"] == bos_id)
    tj["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": bos, "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
    }
    dst.write_text(json.dumps(tj, ensure_ascii=False, indent=2), encoding="utf-8")
