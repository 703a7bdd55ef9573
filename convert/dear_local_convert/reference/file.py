"""The reference file: how a reference run is written (:func:`record_reference`) and read back (:func:`read_reference`).

A JSONL file. Line 1 is a header (model, device, dtype, library versions, profile, slice and its
sha256, dear-local version). Every other line is one query: its prompt token ids
(per window), generated ids and raw text, the parsed ranking and parse status, and
the first-token log-probabilities of every candidate id in its first window.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from dear_local import __version__
from dear_local.backends.base import Backend
from dear_local.contract import Profile
from dear_local.errors import ReferenceError_
from dear_local.fileio import atomic_path, refuse_overwrite

from dear_local_convert.slice_runs import run_queries, vocab_fingerprint

FORMAT = "dear-local-reference/1"


def record_reference(
    backend: Backend, eval_slice, profile: Profile, out: str | Path, *, model: dict, engine: dict, force: bool = False
) -> Path:
    """Rank every query of ``eval_slice`` with ``backend`` and write the reference file atomically.

    ``model`` names the model (``name``, ``checkpoint``, ``repo``, ``revision``); ``engine``
    says what computed it (``device``, ``device_name``, ``dtype``, ``torch``, ``transformers``).
    Line 1 of the file is the header, then one record per query (see the module docstring).

    Raises:
        UserInputError: ``out`` exists and ``force`` is not set.
    """
    from dear_local.progress import bar

    out = Path(out)
    refuse_overwrite(out, force)
    header = {
        "type": "header",
        "format": FORMAT,
        "model": model,
        "vocab": vocab_fingerprint(backend),
        **engine,
        "profile": profile.to_dict(),
        "slice": {
            "name": eval_slice.name,
            "sha256": eval_slice.sha256,
            "queries": len(eval_slice.queries),
            "passages": eval_slice.passages_per_query,
        },
        "dear_local": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(header) + "\n")
        with bar(total=len(eval_slice.queries), desc="reference", unit="query") as pbar:
            def write(rec: dict) -> None:
                f.write(json.dumps(rec) + "\n")
                pbar.update(1)

            run_queries(backend, profile, eval_slice, write)
    return out


def read_reference(path: str | Path) -> tuple[dict, list[dict]]:
    """Load a reference file; refuse a corrupt or foreign one with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise ReferenceError_(f"reference file {path} does not exist; create it with `dear-local reference`")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    try:
        rows = [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as exc:
        raise ReferenceError_(
            f"{path} is corrupt (line {exc.lineno if hasattr(exc, 'lineno') else '?'} is not JSON); "
            "recreate it with `dear-local reference`"
        ) from None
    if not rows or not all(isinstance(r, dict) for r in rows) or rows[0].get("type") != "header" \
            or rows[0].get("format") != FORMAT:
        raise ReferenceError_(f"{path} is not a dear-local reference file ({FORMAT}); recreate it with `dear-local reference`")
    header, queries = rows[0], rows[1:]
    redo = "recreate it with `dear-local reference`"
    if not _header_ok(header):
        raise ReferenceError_(f"{path} has a damaged header (slice, profile, model, vocab, dtype or device missing); {redo}")
    if len(queries) != header["slice"]["queries"] or any(q.get("type") != "query" for q in queries):
        raise ReferenceError_(
            f"{path} is incomplete or corrupt: the header promises {header['slice']['queries']} "
            f"queries but it holds {len(queries)}; {redo}"
        )
    if not all(_query_ok(q) for q in queries) or len({q["qid"] for q in queries}) != len(queries):
        raise ReferenceError_(f"{path} is corrupt (a query id repeats, or a query's order, windows or first-token "
                              f"log-probabilities are damaged); {redo}")
    return header, queries


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _ids(v) -> bool:
    return isinstance(v, list) and all(type(i) is int and i >= 0 for i in v)


def _header_ok(h: dict) -> bool:
    """The header fields the check reads, with the types it reads them as."""
    sl, prof = h.get("slice"), h.get("profile")
    return (isinstance(sl, dict) and isinstance(sl.get("name"), str) and isinstance(sl.get("sha256"), str)
            and type(sl.get("queries")) is int and type(sl.get("passages")) is int
            and isinstance(prof, dict) and isinstance(h.get("model"), dict) and isinstance(h.get("vocab"), dict)
            and all(isinstance(h.get(k), str) for k in ("dtype", "device_name")))


def _query_ok(q: dict) -> bool:
    """A query record's fields, as :class:`~dear_local_convert.agreement.check.RunResult` reads them."""
    windows = q.get("windows")
    return (isinstance(q.get("qid"), str) and isinstance(q.get("order"), list)
            and all(isinstance(d, str) for d in q["order"]) and len(set(q["order"])) == len(q["order"])
            and isinstance(q.get("first_token_logprobs"), list) and all(_is_num(v) for v in q["first_token_logprobs"])
            and isinstance(windows, list) and len(windows) > 0
            and all(isinstance(w, dict) and isinstance(w.get("status"), str) and _ids(w.get("prompt_ids"))
                    and len(w["prompt_ids"]) > 0 and _is_num(w.get("prompt_seconds")) and _is_num(w.get("decode_seconds"))
                    and _is_num(w.get("model_calls")) for w in windows))
