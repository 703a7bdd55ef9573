"""What a server ranks with, as ``/v1/models``, ``/info`` and every answer's ``meta`` describe it.

A server runs a listwise model, a pointwise first stage in front of one, or a pointwise ranker alone
(``serve --first-stage`` without ``--model``). The listwise profile's window and stride mean nothing
in the last case, so they are None there and the template is the pointwise one's.
"""

from __future__ import annotations

from dataclasses import dataclass

POINTWISE_DECODING = "pointwise"  # `decoding` when no listwise model runs: scores, no generated answer


@dataclass(frozen=True)
class Served:
    """The served stages.

    ``template``/``decoding``: the listwise model's (or the pointwise template's name and
    ``"pointwise"`` without one). ``window``/``stride``: passages per window and the step between
    windows, None without a listwise model. ``max_input_length``: tokens of one document that are
    read (the listwise template's passage cap, or the pointwise pair's length without a listwise model).
    ``max_batch_tokens``: the listwise context, or without one the tokens of one pointwise llama.cpp
    call. ``first_stage``: the pointwise template's name, None without a first stage.
    ``listwise_depth``: how many of the first stage's best the listwise model reorders, None
    unless both stages run.
    """

    template: str
    decoding: str
    window: int | None
    stride: int | None
    max_input_length: int
    max_batch_tokens: int
    first_stage: str | None
    listwise_depth: int | None


def served(reranker) -> Served:
    """:class:`Served` for a :class:`~dear_local.reranker.Reranker`."""
    first = reranker.first_stage
    if reranker.backend is None:  # a pointwise ranker alone (the Reranker refuses neither stage)
        return Served(
            template=first.template.name, decoding=POINTWISE_DECODING, window=None, stride=None,
            max_input_length=first.template.max_length, max_batch_tokens=first.batch * first.template.max_length,
            first_stage=first.template.name, listwise_depth=None,
        )
    p = reranker.profile
    return Served(
        template=p.template, decoding=p.decoding, window=p.window, stride=p.stride,
        max_input_length=p.tmpl.max_passage_tokens, max_batch_tokens=reranker.backend.n_ctx,
        first_stage=first.template.name if first is not None else None,
        listwise_depth=reranker.options.listwise_depth if first is not None else None,
    )
