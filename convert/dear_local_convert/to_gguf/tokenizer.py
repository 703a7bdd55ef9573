"""Tokenizer metadata for the GGUF file, read from ``tokenizer.json`` and ``tokenizer_config.json``.

Only gpt2-style byte-level BPE tokenizers are handled (Llama 3.x, DeAR-8B,
SmolLM2). What gets written:

- every token, typed: control for special added tokens, user-defined for other
  added tokens, normal for the rest (and unused for padding up to ``vocab_size``);
- the merges, bos/eos/pad ids, ``add_bos_token`` and the chat template
  (through gguf's ``SpecialVocab``);
- the end-of-turn id. Llama-3.1 instruct ends a turn with ``<|eot_id|>`` and
  ends text with ``<|end_of_text|>``: eos becomes the end-of-text token named in
  ``config.json``'s ``eos_token_id`` list, eot the turn marker, so llama.cpp
  stops on both;
- the pre-tokenizer name llama.cpp uses to split text before BPE, detected
  from the structure of ``tokenizer.json``'s ``pre_tokenizer``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from dear_local.contract.stops import END_OF_MESSAGE, END_OF_TURN
from dear_local.errors import ConversionError

LLAMA3_SPLIT = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)

# Pre-tokenizer structure (normalised, see _signature) -> llama.cpp pre-tokenizer name.
KNOWN_PRE_TOKENIZERS: dict[tuple, str] = {
    (("Split", LLAMA3_SPLIT, "Isolated", False), ("ByteLevel", False, False)): "llama-bpe",
    (("Digits", True), ("ByteLevel", False, True)): "smollm",
    (("ByteLevel", False, True),): "gpt-2",
}

PRE_TOKENIZER_FLAG = "--pre-tokenizer"


@dataclass
class TokenizerMeta:
    pre: str
    tokens: list[str]
    types: list[int]
    special_ids: dict[str, int] = field(default_factory=dict)  # bos, eos, eot, eom, pad, unk ...
    add_bos: bool = False
    add_eos: bool = False
    special_vocab: object = None  # gguf.SpecialVocab (merges, chat template)

    def add_to(self, writer) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.types)
        sv = self.special_vocab
        sv.special_token_ids = dict(self.special_ids)
        sv.add_special_token = {"bos": self.add_bos, "eos": self.add_eos}
        sv.add_to_gguf(writer, quiet=True)


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConversionError(f"{path} is unreadable or not valid JSON ({exc}); re-download it") from exc


def _signature(pre_tokenizer: dict | None) -> tuple:
    if not pre_tokenizer:
        return ()
    parts = pre_tokenizer.get("pretokenizers") if pre_tokenizer.get("type") == "Sequence" else [pre_tokenizer]
    sig = []
    for p in parts or []:
        kind = p.get("type")
        if kind == "Split":
            pattern = p.get("pattern", {})
            sig.append(("Split", pattern.get("Regex", pattern.get("String")), p.get("behavior"), p.get("invert", False)))
        elif kind == "ByteLevel":
            sig.append(("ByteLevel", bool(p.get("add_prefix_space")), bool(p.get("use_regex", True))))
        elif kind == "Digits":
            sig.append(("Digits", bool(p.get("individual_digits"))))
        else:
            sig.append((kind, json.dumps(p, sort_keys=True)))
    return tuple(sig)


def detect_pre_tokenizer(tokenizer_json: dict) -> str:
    """The llama.cpp pre-tokenizer name for this tokenizer, or a clear error."""
    if tokenizer_json.get("normalizer"):
        sig = None
    else:
        sig = _signature(tokenizer_json.get("pre_tokenizer"))
    name = KNOWN_PRE_TOKENIZERS.get(sig) if sig is not None else None
    if name is None:
        known = ", ".join(sorted(set(KNOWN_PRE_TOKENIZERS.values())))
        raise ConversionError(
            "unknown pre-tokenizer in tokenizer.json (its pre_tokenizer/normalizer matches none of: "
            f"{known}); if you know the llama.cpp name for it, pass {PRE_TOKENIZER_FLAG} NAME "
            "(a wrong name makes the GGUF tokenize differently from the original)"
        )
    return name


def _add_bos(tokenizer_json: dict, config: dict, bos: str | None) -> bool:
    """Whether the tokenizer prepends BOS: tokenizer_config's flag, else its post-processor."""
    if isinstance(config.get("add_bos_token"), bool):
        return config["add_bos_token"]
    post = tokenizer_json.get("post_processor") or {}
    for proc in post.get("processors", [post]):
        if proc.get("type") == "TemplateProcessing":
            single = proc.get("single") or []
            first = single[0].get("SpecialToken", {}).get("id") if single else None
            return first is not None and first == bos
    return False


def _content(entry) -> str | None:
    if isinstance(entry, dict):
        return entry.get("content")
    return entry if isinstance(entry, str) else None


def read_tokenizer(src_dir: Path, n_vocab: int, eos_token_ids: tuple[int, ...], pre_override: str | None) -> TokenizerMeta:
    """Read and check the tokenizer; raise :class:`ConversionError` on anything unusable."""
    import gguf

    src_dir = Path(src_dir)
    tj_path = src_dir / "tokenizer.json"
    if not tj_path.is_file():
        extra = " (it has a SentencePiece tokenizer.model, which is not supported)" if (
            src_dir / "tokenizer.model"
        ).is_file() else ""
        raise ConversionError(
            f"{src_dir} has no tokenizer.json{extra}; a gpt2-style BPE tokenizer.json is required. "
            "Download it with the checkpoint (or save it with AutoTokenizer.save_pretrained)"
        )
    tj = _load_json(tj_path)
    tc_path = src_dir / "tokenizer_config.json"
    tc = _load_json(tc_path) if tc_path.is_file() else {}
    model = tj.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ConversionError(
            f"tokenizer.json has a {model.get('type')!r} model; only byte-level BPE tokenizers "
            "(Llama 3.x, SmolLM2) are supported"
        )
    pre = pre_override or detect_pre_tokenizer(tj)

    by_id: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    added = {int(a["id"]): a for a in tj.get("added_tokens", [])}
    for i, a in added.items():
        by_id[i] = a["content"]
    too_big = sorted(i for i in by_id if i >= n_vocab)
    if too_big:
        raise ConversionError(
            f"tokenizer has token id(s) {too_big[:3]} at or past config.json's vocab_size {n_vocab}; "
            "tokenizer.json does not match the model"
        )
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    if len(set(tokens)) != len(tokens):
        raise ConversionError("tokenizer.json maps one token text to two ids; the tokenizer is corrupt")

    gguf_log = logging.getLogger("gguf.vocab")
    level = gguf_log.level
    gguf_log.setLevel(logging.ERROR)  # its TemplateProcessing guesses are replaced below
    try:
        sv = gguf.SpecialVocab(src_dir, load_merges=True, n_vocab=n_vocab)
    finally:
        gguf_log.setLevel(level)
    if not sv.merges:
        raise ConversionError("tokenizer.json has no BPE merges; the tokenizer is incomplete")
    ids = dict(sv.special_token_ids)
    text_to_id = {t: i for i, t in enumerate(tokens)}
    bos_text = _content(tc.get("bos_token"))
    _set_end_tokens(ids, text_to_id, tokens, eos_token_ids)
    return TokenizerMeta(
        pre=pre,
        tokens=tokens,
        types=[int(t) for t in types],
        special_ids=ids,
        add_bos=_add_bos(tj, tc, bos_text or (tokens[ids["bos"]] if "bos" in ids else None)),
        add_eos=bool(tc.get("add_eos_token", False)),
        special_vocab=sv,
    )


def _set_end_tokens(ids: dict, text_to_id: dict, tokens: list[str], eos_token_ids: tuple[int, ...]) -> None:
    """Fill eot/eom, and make eos the end-of-text token when the tokenizer's eos ends a turn."""
    eot = next((text_to_id[t] for t in END_OF_TURN if t in text_to_id), None)
    if eot is not None:
        ids["eot"] = eot
    stops = [i for i in eos_token_ids if 0 <= i < len(tokens)]
    for i in stops:
        if tokens[i] in END_OF_MESSAGE:
            ids["eom"] = i
    others = [i for i in stops if i != eot and tokens[i] not in END_OF_MESSAGE]
    if "eos" not in ids and stops:
        ids["eos"] = others[0] if others else stops[0]
    elif ids.get("eos") == eot and others:
        ids["eos"] = others[0]
