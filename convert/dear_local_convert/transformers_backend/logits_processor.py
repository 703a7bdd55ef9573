"""dear-local's permutation constraint as a transformers ``LogitsProcessor``.

For people who drive the model with ``model.generate`` themselves::

    proc = permutation_logits_processor(tokenizer, n=20, id_base=0)
    out = model.generate(**inputs, logits_processor=LogitsProcessorList([proc]),
                         do_sample=False, max_new_tokens=200)

Each step masks every token that would break the answer ``[a] > [b] > ... > [z]``
(the same state machine as ``dear_local.contract.constraint``), and once the
permutation is complete only end-of-sequence tokens remain, so ``generate``
stops exactly there. It has no jump-forward: ``generate`` makes one call per
token, forced or not, which is what dear-local's ``constrained`` mode without
jump-forward does too.
"""

from __future__ import annotations

from typing import Sequence

from dear_local.contract.constraint import PermutationConstraint, TokenIndex
from dear_local.errors import missing_extra
from dear_local_convert.transformers_backend.token_bytes import hf_token_pieces


def permutation_logits_processor(
    tokenizer_or_pieces,
    n: int,
    id_base: int = 0,
    *,
    eos_token_id: int | Sequence[int] | None = None,
    prompt_length: int | None = None,
):
    """A ``LogitsProcessor`` that only lets ``generate`` write a valid permutation of ``n`` ids.

    ``tokenizer_or_pieces`` is a Hugging Face tokenizer or a list of token bytes
    (``Backend.vocab_pieces()``). ``eos_token_id`` defaults to the tokenizer's;
    it is the only token allowed once the permutation is complete. The prompt
    length is taken from the first call unless given (all rows of a batch
    share it, as ``generate`` pads them to one length).
    """
    try:
        import torch
        from transformers import LogitsProcessor
    except ImportError:
        raise missing_extra("torch", "convert") from None

    if isinstance(tokenizer_or_pieces, (list, tuple)):
        pieces = list(tokenizer_or_pieces)
    else:
        pieces = hf_token_pieces(tokenizer_or_pieces)
        if eos_token_id is None:
            eos_token_id = tokenizer_or_pieces.eos_token_id
    if eos_token_id is None:
        raise ValueError("pass eos_token_id: it ends generation once the permutation is complete")
    eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    constraint = PermutationConstraint(TokenIndex(pieces), n, id_base)

    class PermutationLogitsProcessor(LogitsProcessor):
        def __init__(self) -> None:
            self.constraint = constraint
            self.prompt_length = prompt_length
            self.states: list = []
            self.seen: list[int] = []

        def __call__(self, input_ids, scores):
            if self.prompt_length is None:
                self.prompt_length = input_ids.shape[1]
            while len(self.states) < input_ids.shape[0]:
                self.states.append(constraint.initial)
                self.seen.append(self.prompt_length)
            mask = torch.full_like(scores, float("-inf"))
            for row in range(input_ids.shape[0]):
                state = self.states[row]
                for tok in input_ids[row, self.seen[row] :].tolist():
                    if constraint.is_done(state):
                        break  # the row has finished (eos or padding follows)
                    nxt = constraint.advance(state, tok)
                    if nxt is None:
                        raise ValueError(f"token {tok} breaks the permutation; was the processor reused?")
                    state = nxt
                self.states[row], self.seen[row] = state, input_ids.shape[1]
                if constraint.is_done(state):
                    allowed = [t for t in eos if t < scores.shape[1]]
                else:
                    allowed = [step.token for step in constraint.allowed(state)]
                mask[row, allowed] = 0.0
            return scores + mask

    return PermutationLogitsProcessor()
