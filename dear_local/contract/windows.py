"""Sliding windows over a candidate list, back to front, as rank_llm runs them."""

from __future__ import annotations


def first_window(passages: list, window: int) -> list:
    """The passages of the first window ranked: the tail of the list (windows run back to front)."""
    return list(passages[-min(len(passages), window):]) if passages else []


def window_spans(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The ``(start, end)`` spans to rerank, in processing order.

    This is rank_llm's loop: it starts at the tail and moves ``stride`` towards
    the head each time, and it stops once a window has covered the head, so
    the head is always processed last. (RankGPT's own loop can skip the head
    when ``n - window`` is not a multiple of the stride.)
    """
    if n <= 0:
        return []
    spans = []
    # Clamping the first start keeps a list shorter than the window from
    # being skipped by the loop condition (rank_llm's edge case at n = w - s).
    end, start = n, max(n - window, 0)
    while end > 0 and start + stride != 0:
        start = max(start, 0)
        spans.append((start, end))
        end -= stride
        start -= stride
    return spans
