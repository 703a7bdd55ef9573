"""Decoding one window: the profile's mode turns prompt ids into an answer.

- ``greedy`` (:mod:`.greedy`): argmax each step, stopped at end-of-generation or
  once the answer is a full permutation.
- ``constrained`` (:mod:`.constrained`): greedy restricted to valid permutations,
  with jump-forward and a draft of the next ids.
- ``first-token`` (:mod:`.first_token`): FIRST, ids ranked from one pass.

Every mode uses only the backend's evaluation primitives (``prefill``,
``extend``, ``extend_rows``, ``rewind``) and its tokenizer, so llama.cpp and the
transformers reference decode identically. :func:`decode` is the one switch.
"""

from __future__ import annotations

from ..backends.base import Backend, capabilities_of
from ..contract import Profile
from ..errors import UnknownProfileError
from .constrained import constrained
from .first_token import branch_points, first_token, id_token_paths
from .greedy import completion_check, greedy
from .remote import remote_constrained, remote_first_token, remote_greedy
from .result import Generation, StopCheck

__all__ = [
    "Generation", "StopCheck", "branch_points", "completion_check", "constrained", "decode", "first_token",
    "greedy", "id_token_paths",
]


def decode(backend: Backend, profile: Profile, prompt_ids: list[int], n: int) -> tuple[Generation, list[float] | None]:
    """Decode the answer for one window of ``n`` passages in ``profile.decoding`` mode.

    Returns the generation and, for ``first-token``, a relevance score per window
    position (a softmax over the ids, summing to 1); None for the other modes.

    Raises:
        UnknownProfileError: a decoding mode that does not exist, or ``first-token``
            with a template/tokenizer whose id tokens cannot be told apart.
    """
    tmpl = profile.tmpl
    remote = not capabilities_of(backend).local_evaluation  # an inference server: the same modes over HTTP (.remote)
    if profile.decoding == "greedy":
        stop = completion_check(backend, n, tmpl.id_base)
        run = remote_greedy if remote else greedy
        return run(backend, prompt_ids, profile.max_new_tokens(n), stop), None
    if profile.decoding == "constrained":
        run = remote_constrained if remote else constrained
        return run(backend, prompt_ids, n, tmpl.id_base), None
    if profile.decoding == "first-token":
        run = remote_first_token if remote else first_token
        return run(backend, tmpl, prompt_ids, n)
    raise _unknown_mode(profile)


def _unknown_mode(profile: Profile) -> UnknownProfileError:
    return UnknownProfileError(
        f"unknown decoding mode {profile.decoding!r}; use greedy, constrained or first-token"
    )
