"""The exact bytes of every token of a Hugging Face tokenizer, the transformers side of ``Backend.vocab_pieces``.

The constrained decoder matches answer text byte for byte, so the transformers
reference and llama.cpp must agree on each token's bytes (they do on the
stand-ins' vocabularies; tests/test_decoding.py checks it).
"""

from __future__ import annotations


def _byte_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte -> printable character table (GPT-2 style).

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are mapped,
    in order, to the characters from U+0100 on.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {chr(b): b for b in keep}
    extra = 0
    for b in range(256):
        if b not in keep:
            table[chr(256 + extra)] = b
            extra += 1
    return table


def hf_token_pieces(tokenizer) -> list[bytes]:
    """The bytes of every token of a Hugging Face tokenizer, indexed by token id.

    Byte-level BPE tokens (Llama-3, SmolLM2, GPT-2) are mapped back through the
    byte table; added and special tokens, and tokenizers of other kinds, fall
    back to decoding the single token.
    """
    decoder = _byte_decoder()
    added = set(getattr(tokenizer, "get_added_vocab", dict)().values())
    size = len(tokenizer)
    names = tokenizer.convert_ids_to_tokens(list(range(size)))
    pieces: list[bytes] = []
    for tok, name in enumerate(names):
        if name is not None and tok not in added and all(ch in decoder for ch in name):
            pieces.append(bytes(decoder[ch] for ch in name))
        else:
            text = tokenizer.decode([tok], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            pieces.append(text.encode("utf-8"))
    return pieces
