"""A miniature DeAR: a tiny random-weight Llama-3.1 checkpoint with the real Llama-3 tokenizer.

The converter's hard parts (q/k permutation, llama3 rope scaling, untied
embeddings, GQA, the Llama-3 tokenizer and its end-of-turn token) are all
present at a size that converts and runs in seconds. The weights are random
but scaled so attention is sharp, so a wrong permutation or missing
``rope_freqs`` shows up in the logits.

The tokenizer comes from ``ggml-vocab-llama-bpe.gguf`` through transformers,
with the three fixes ``shared/data/SOURCES.md`` lists (drop the stray token
past the vocabulary, prepend BOS, ``ignore_merges``), a Llama-3 chat template
and ``eos_token`` ``<|eot_id|>``. ``config.json`` is written in the
transformers-4.x style of the real DeAR checkpoint (``rope_theta`` plus
``rope_scaling``, ``eos_token_id`` as a list, ``tie_word_embeddings: false``).
"""

from __future__ import annotations

import json
from pathlib import Path

from dear_local.errors import missing_extra
from dear_local.fileio import atomic_dir

COMPLETE = ".dear-local-complete"
BOS = "<|begin_of_text|>"
BOS_ID = 128000

# Llama-3 instruct chat format, as LLaMA-Factory's llama3 template renders it.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# meta-llama/Llama-3.1-8B-Instruct's config.json (transformers 4.43): the shape of DeAR-8B.
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 8.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0",
    "use_cache": True,
    "vocab_size": 128256,
}

# Llama-3.1-8B's config shape, shrunk: same vocabulary, rope and GQA ratio.
CONFIG = {
    **LLAMA31_8B,
    "head_dim": 32,
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "transformers_version": "4.46.0",
}


def build_tiny_llama3(out_dir: str | Path, vocab_gguf: str | Path, *, seed: int = 0) -> Path:
    """Build (once) the tiny checkpoint in ``out_dir`` and return it; reuse it if complete."""
    return _build(out_dir, vocab_gguf, seed, pointwise=False)


def _build(out_dir: str | Path, vocab_gguf: str | Path, seed: int, *, pointwise: bool) -> Path:
    out = Path(out_dir).expanduser()
    if (out / COMPLETE).is_file():
        return out
    with atomic_dir(out) as tmp:
        write_llama3_tokenizer(Path(vocab_gguf), tmp)
        _write_model(tmp, seed, pointwise=pointwise)
        (tmp / COMPLETE).write_text("tiny llama-3.1" + (" pointwise ranker" if pointwise else "") + "\n", encoding="utf-8")
    return out


# The same tiny Llama-3.1 as a pointwise ranker, shaped like DeAR-P: LlamaForSequenceClassification,
# one label, and pad = eos as the model card's simple_rerank.py sets it.
POINTWISE_CONFIG = {
    **CONFIG,
    "architectures": ["LlamaForSequenceClassification"],
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
    "pad_token_id": 128009,
}


def build_tiny_llama3_pointwise(out_dir: str | Path, vocab_gguf: str | Path, *, seed: int = 1) -> Path:
    """Build (once) the tiny pointwise ranker (random weights and score head) in ``out_dir`` and return it."""
    return _build(out_dir, vocab_gguf, seed, pointwise=True)


def write_llama3_tokenizer(vocab_gguf: Path, out: Path) -> None:
    """Save the Llama-3 HF tokenizer from the vocab GGUF, fixed to match the real Llama-3.1 files."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise missing_extra("transformers", "convert") from exc
    tok = AutoTokenizer.from_pretrained(vocab_gguf.parent, gguf_file=vocab_gguf.name)
    tok.save_pretrained(out)
    for stray in ("chat_template.jinja", "special_tokens_map.json"):
        (out / stray).unlink(missing_ok=True)

    tj_path = out / "tokenizer.json"
    tj = json.loads(tj_path.read_text(encoding="utf-8"))
    n_vocab = CONFIG["vocab_size"]
    # 1. drop the stray <|endoftext|> added past the vocabulary
    tj["added_tokens"] = [a for a in tj["added_tokens"] if a["id"] < n_vocab]
    tj["model"]["vocab"] = {t: i for t, i in tj["model"]["vocab"].items() if i < n_vocab}
    # 2. prepend <|begin_of_text|>, as the real post-processor does
    bos = {"SpecialToken": {"id": BOS, "type_id": 0}}
    tj["post_processor"] = {
        "type": "Sequence",
        "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {
                "type": "TemplateProcessing",
                "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [
                    bos,
                    {"Sequence": {"id": "A", "type_id": 0}},
                    {"SpecialToken": {"id": BOS, "type_id": 1}},
                    {"Sequence": {"id": "B", "type_id": 1}},
                ],
                "special_tokens": {BOS: {"id": BOS, "ids": [BOS_ID], "tokens": [BOS]}},
            },
        ],
    }
    # 3. whole words found in the vocabulary skip the merges
    tj["model"]["ignore_merges"] = True
    tj_path.write_text(json.dumps(tj, ensure_ascii=False, indent=2), encoding="utf-8")

    tc_path = out / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text(encoding="utf-8"))
    tc.update(
        bos_token=BOS,
        eos_token="<|eot_id|>",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=True,
        model_max_length=131072,
        tokenizer_class="PreTrainedTokenizerFast",
    )
    tc.pop("pad_token", None)
    tc.pop("unk_token", None)
    tc_path.write_text(json.dumps(tc, indent=2), encoding="utf-8")


def _write_model(out: Path, seed: int, *, pointwise: bool = False) -> None:
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification
    except ImportError as exc:
        raise missing_extra(exc.name or "torch", "convert") from exc

    config = POINTWISE_CONFIG if pointwise else CONFIG
    cfg = {k: v for k, v in config.items() if k not in ("architectures", "transformers_version", "torch_dtype")}
    torch.manual_seed(seed)
    cls = LlamaForSequenceClassification if pointwise else LlamaForCausalLM
    model = cls(LlamaConfig(**cfg)).to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # norms: not all ones, so a misplaced norm shows
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif "embed_tokens" in name:
                p.normal_(0.0, 1.0)
            else:
                gain = 2.0 if ("q_proj" in name or "k_proj" in name) else 1.0
                p.normal_(0.0, gain / p.shape[1] ** 0.5)
    model.to(torch.bfloat16).save_pretrained(out, max_shard_size="40MB")
    (out / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    gen = {"bos_token_id": BOS_ID, "eos_token_id": CONFIG["eos_token_id"], "do_sample": False}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2), encoding="utf-8")
