"""The output formats of ``dear-local rerank``, as lines of text.

- ``table``: a readable table per query.
- ``json``: one JSON object per query with the profile, every result and every window's raw
  model output and parse status.
- ``trec``: a TREC run, ``qid Q0 docid rank score dear-local``, the score ``n - rank`` for n
  candidates so that trec_eval's sort by score keeps the order.
- ``rank_llm``: rank_llm's result records (see ``formats.rank_llm``).
"""

from __future__ import annotations

import json
from typing import Iterable, Iterator

from ..terminal import UNSAFE, printable
from .rank_llm import result_record
from .trec import run_line

FORMATS = ("table", "json", "trec", "rank_llm")

def _json_escape(m) -> str:
    return f"\\u{ord(m.group(0)):04x}"


def json_line(obj) -> str:
    """``obj`` as one line of JSON: UTF-8 text kept as is, except the characters a terminal acts on or that
    readers take as line breaks (C0 and C1 controls, DEL, bidi overrides, U+2028/U+2029), written as
    ``\\uXXXX`` escapes; ``json.loads`` gives ``obj`` back."""
    # outside strings JSON holds only ASCII punctuation, digits and letters, so every match is inside a string
    return UNSAFE.sub(_json_escape, json.dumps(obj, ensure_ascii=False))


def render(outputs: Iterable[tuple], fmt: str, profile) -> Iterator[str]:
    """Lines (without line endings) for ``outputs``, pairs of ``(Request, RerankResponse)``.

    ``fmt`` is one of ``FORMATS``; ``profile`` is the ``Profile`` the responses were made with.
    """
    for req, resp in outputs:
        if fmt == "json":
            yield json_line({
                "qid": req.qid,
                "query": req.query,
                "profile": profile.to_dict(),
                "scores": resp.ranking.score_kind or "rank",
                "results": [
                    {"index": r.index, "docid": req.docids[r.index], "rank": r.rank, "score": r.score,
                     "truncated": r.truncated, "text": r.text}
                    for r in resp.results
                ],
                "windows": [w.record() for w in resp.windows],
            })
        elif fmt == "trec":
            n = len(req.documents)
            for r in resp.results:
                yield run_line(req.qid, req.docids[r.index], r.rank + 1, n - r.rank)
        elif fmt == "rank_llm":
            yield json_line(result_record(req, [r.index for r in resp.results], [r.score for r in resp.results]))
        else:
            statuses = ", ".join(sorted(set(resp.statuses))) or "ok"
            pointwise = resp.ranking.score_kind == "pointwise-probability"
            if pointwise and not resp.windows:
                how = "pointwise first stage only"
            else:
                how = f"{'pointwise first stage, then ' if pointwise else ''}{profile.template}/{profile.decoding}; " \
                      f"parse: {statuses}"
            # table text goes to a terminal: control characters and escape sequences are shown escaped
            yield f"query {printable(req.qid)}: {printable(req.query)}  [{how}]"
            yield f"{'rank':>4}  {'doc':>5}  {'score':>5}  text"
            for r in resp.results:
                text = " ".join(r.text.split())
                yield f"{r.rank + 1:>4}  {printable(req.docids[r.index]):>5}  {r.score:5.3f}  {printable(text[:70])}"
            yield ""
