"""Check a freshly written GGUF tokenizes like the checkpoint's own ``tokenizer.json``.

A wrong pre-tokenizer name, a lost merge or a mistyped token makes llama.cpp
split text differently from transformers, and the ranking prompt then differs
token by token. The probe text exercises what pre-tokenizers disagree on:
digit runs, case in contractions, runs of spaces and newlines, accents, CJK
and emoji.
"""

from __future__ import annotations

from pathlib import Path

from dear_local.errors import ConversionError
from dear_local.token_ids import first_difference

PROBE = (
    "Hello world! It's 2024; I'LL pay $1234567.89 (or 3.14159) you've won't\n\n"
    "   indented\ttabs  and   spaces \n\r\n"
    "Ünïcödé café naïve — “quotes” … 日本語のテキスト 한국어 Ελληνικά русский 🙂🚀\n"
    "[1] > [20] > [3] passage:Title: Content: <b>html</b> e-mail@x.org 0x1F 1st 22nd\n"
    "    def f(x):\n        return x**2  # comment\n"
)


def hf_ids(src_dir: Path, text: str) -> list[int]:
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - comes with transformers
        from dear_local.errors import missing_extra

        raise missing_extra("tokenizers", "convert") from None
    return Tokenizer.from_file(str(Path(src_dir) / "tokenizer.json")).encode(text, add_special_tokens=False).ids


def gguf_ids(gguf_path: Path, text: str) -> list[int]:
    from dear_local.llama_cpp_lib import load_vocab

    with load_vocab(gguf_path) as vocab:
        return vocab.tokenize(text)


def check_gguf_tokenizer(gguf_path: Path, src_dir: Path, text: str = PROBE) -> None:
    """Raise :class:`ConversionError` if llama.cpp and the HF tokenizer disagree on ``text``."""
    try:
        got = gguf_ids(gguf_path, text)
    except (ValueError, RuntimeError) as exc:
        raise ConversionError(
            f"llama.cpp cannot load the converted tokenizer ({exc}); if you passed --pre-tokenizer, "
            "the name is probably not one llama.cpp knows"
        ) from exc
    want = hf_ids(src_dir, text)
    if got != want:
        at = first_difference(got, want)
        raise ConversionError(
            f"the converted tokenizer disagrees with tokenizer.json from token {at} of a probe text "
            f"(llama.cpp {got[at:at + 5]} vs transformers {want[at:at + 5]}); the pre-tokenizer is "
            "probably wrong: pass the right one with --pre-tokenizer"
        )
