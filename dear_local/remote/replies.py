"""Checks on what an inference server answers, before any of it reaches llama.cpp or numpy.

A server is untrusted: a broken or hostile one can answer any JSON. Every value that dear-local
uses from a reply goes through one of these functions, which return it in the type the caller
needs or raise a one-line :class:`~dear_local.errors.ServerError` that says what was wrong:

- token ids: JSON integers (``true`` is not one) in ``[0, n_vocab)``; an id outside the
  vocabulary would make llama.cpp abort the process when the answer is turned into text;
- log-probabilities: a JSON number that is not NaN and not above 0 (up to rounding), or
  ``null``/``-Infinity`` for a probability of 0;
- counts (``n_ctx``, slots): JSON integers in a stated range;
- objects and lists: the JSON type the protocol documents.

``what`` names the value in the caller's terms, e.g. ``"/completion tokens[3]"``.
"""

from __future__ import annotations

import math
import re

from ..errors import ServerError

MAX_TOKEN_ID = 2**31  # llama.cpp's token type is int32
LOGPROB_SLACK = 1e-3  # a log-probability a little above 0 is float rounding; more is a broken server
_VLLM_ID = re.compile(r"token_id:([0-9]{1,10})")
FIX = "check that the server runs the model --model names (any quant of it) and is not broken"


def show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def bad(what: str, value, expected: str) -> ServerError:
    """The error for a reply whose ``what`` is ``value`` where ``expected`` was due."""
    return ServerError(f"the server answered {show(value)} for {what}, not {expected}; {FIX}")


def is_int(value) -> bool:
    """A JSON integer: a Python ``int`` that is not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def obj(value, what: str) -> dict:
    """``value`` if it is a JSON object."""
    if not isinstance(value, dict):
        raise bad(what, value, "a JSON object")
    return value


def items(value, what: str) -> list:
    """``value`` if it is a JSON array."""
    if not isinstance(value, list):
        raise bad(what, value, "a JSON array")
    return value


def count(value, what: str, lo: int, hi: int) -> int:
    """``value`` if it is an integer in ``[lo, hi]``."""
    if not is_int(value) or not lo <= value <= hi:
        raise bad(what, value, f"an integer from {lo} to {hi}")
    return value


def token_id(value, what: str, n_vocab: int | None) -> int:
    """``value`` if it is a token id of a vocabulary of ``n_vocab`` tokens (any int32 id when None)."""
    top = n_vocab if n_vocab else MAX_TOKEN_ID
    if not is_int(value) or not 0 <= value < top:
        raise bad(what, value, f"a token id from 0 to {top - 1}")
    return value


def token_ids(value, what: str, n_vocab: int | None) -> list[int]:
    """``value`` if it is a JSON array of token ids."""
    return [token_id(t, f"{what}[{i}]", n_vocab) for i, t in enumerate(items(value, what))]


def id_from_text(token, what: str, n_vocab: int | None) -> int:
    """The id in vLLM's ``token_id:N`` token text (``return_tokens_as_token_ids``)."""
    m = _VLLM_ID.fullmatch(token) if isinstance(token, str) else None
    if m is None:
        if isinstance(token, str) and not token.startswith("token_id:"):
            raise ServerError(
                f"the server answered token {show(token)} without its id for {what}; with vLLM, dear-local asks "
                "for return_tokens_as_token_ids, which needs vLLM 0.6 or newer"
            )
        raise bad(what, token, "a token written token_id:N")
    return token_id(int(m.group(1)), what, n_vocab)


def logprob(value, what: str) -> float:
    """A log-probability: a number that is not NaN and at most 0; ``null`` (how servers write
    the -inf of a probability of 0) and ``-Infinity`` give ``-inf``."""
    if value is None:
        return -math.inf
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise bad(what, value, "a log-probability (a number, at most 0)")
    try:
        value = float(value)
    except OverflowError:  # an integer of hundreds of digits
        raise bad(what, value, "a log-probability (a number, at most 0)") from None
    if math.isnan(value) or value > LOGPROB_SLACK:
        raise bad(what, value, "a log-probability (a number, at most 0)")
    return min(value, 0.0)
