"""Batch output that loses nothing: written query by query, resumed where a killed run stopped.

``rerank --out OUT`` writes each finished query's lines to ``OUT.partial`` and, once they are
flushed to disk, appends one line to the journal ``OUT.partial.journal``: ``[qid, length of
OUT.partial after it, the query's position in the input]`` as JSON. Queries may finish in any
order (several in flight on a server fleet). Started again with the same ``--out``, the run cuts
``OUT.partial`` back to the last length the journal vouches for (dropping a query that was cut
short), skips the queries the journal lists, and goes on. When every query is done, the
queries are put in input order into ``OUT`` (atomically) and the partial files removed. Kill
it at any point and start it again: the result holds every query exactly once, in input order.

The journal's first line records what the output depends on (format, model, profile, input
queries); a restart with anything different is refused, and ``--force`` starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import UserInputError
from ..fileio import atomic_path, check_writable, refuse_overwrite


def run_key(fmt: str, model: str, profile: dict, qids: list[str], top_n: int | None) -> dict:
    """What a resumed run must share with the one that started the file."""
    digest = hashlib.sha256("\n".join(qids).encode("utf-8", "surrogatepass")).hexdigest()
    return {"format": fmt, "model": model, "profile": profile, "top_n": top_n, "queries": len(qids), "qids_sha256": digest}


class ResumableOutput:
    """``OUT`` built query by query; see the module docstring.

    Raises:
        UserInputError: ``OUT`` exists and ``force`` is not set; or an unfinished ``OUT.partial``
            was started with other options (the message names them) and ``force`` is not set.
    """

    def __init__(self, out: str | Path, key: dict, *, force: bool = False) -> None:
        self.out = Path(out)
        refuse_overwrite(self.out, force)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.journal = self.out.with_name(self.out.name + ".partial.journal")
        if force:
            for p in (self.partial, self.journal):
                p.unlink(missing_ok=True)
        check_writable(self.out.parent, target=self.out)
        self._entries: list[tuple[str, int, int]] = self._resume(key)  # (qid, end offset, input position)
        self.done: list[str] = [qid for qid, _, _ in self._entries]
        self._data = open(self.partial, "ab")
        self._log = open(self.journal, "a", encoding="utf-8")
        if not self.done and self._log.tell() == 0:
            self._append_journal(json.dumps(key))

    @property
    def done_positions(self) -> set[int]:
        """Input positions of the queries already written."""
        return {pos for _, _, pos in self._entries}

    def _resume(self, key: dict) -> list[tuple[str, int, int]]:
        """The queries already written, after cutting ``OUT.partial`` back to what the journal vouches for."""
        if not self.journal.is_file():
            self.partial.unlink(missing_ok=True)  # data without a journal cannot be trusted
            return []
        lines = self.journal.read_text(encoding="utf-8").split("\n")
        try:
            recorded = json.loads(lines[0])
        except (json.JSONDecodeError, IndexError):
            recorded = None
        if recorded != key:
            changed = sorted(k for k in key if not recorded or recorded.get(k) != key[k]) or ["the journal"]
            raise UserInputError(
                f"{self.partial} is an unfinished run made with a different {', '.join(changed)}; "
                "rerun with the same options to resume it, or pass --force to start over"
            )
        entries: list[tuple[str, int, int]] = []
        for line in lines[1:]:
            try:
                entry = json.loads(line)
                qid, length = entry[0], entry[1]
                pos = entry[2] if len(entry) > 2 else len(entries)  # journals of 0.x runs are in input order
            except (ValueError, TypeError, IndexError, KeyError):
                break  # the end, or a line a kill cut short
            entries.append((qid, length, pos))
        size = entries[-1][1] if entries else 0
        have = self.partial.stat().st_size if self.partial.is_file() else 0
        if have < size:
            raise UserInputError(
                f"{self.partial} is shorter than its journal says ({have} < {size} bytes); pass --force to start over"
            )
        with open(self.partial, "ab") as f:
            f.truncate(size)
        with open(self.journal, "w", encoding="utf-8") as f:  # without a line a kill may have cut short
            f.write("".join(line + "\n" for line in [lines[0], *(json.dumps(list(e)) for e in entries)]))
        return entries

    def _append_journal(self, line: str) -> None:
        self._log.write(line + "\n")
        self._log.flush()
        os.fsync(self._log.fileno())

    def write(self, qid: str, lines: list[str], position: int | None = None) -> None:
        """Add one finished query (at ``position`` in the input; default: next in order):
        its lines, then its journal entry once they are on disk."""
        pos = len(self._entries) if position is None else position
        self._data.write("".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass"))
        self._data.flush()
        os.fsync(self._data.fileno())
        self.done.append(qid)
        self._entries.append((qid, self._data.tell(), pos))
        self._append_journal(json.dumps([qid, self._data.tell(), pos]))

    def finish(self) -> Path:
        """Every query is written: ``OUT`` gets them in input order, and the partial files go."""
        self.close()
        spans, start = [], 0
        for _, end, pos in self._entries:
            spans.append((pos, start, end))
            start = end
        if [pos for pos, _, _ in spans] == sorted(pos for pos, _, _ in spans):
            os.replace(self.partial, self.out)
        else:
            data = self.partial.read_bytes()
            with atomic_path(self.out, suffix=".sorting") as tmp:  # OUT.partial is the data itself
                tmp.write_bytes(b"".join(data[a:b] for _, a, b in sorted(spans)))
            self.partial.unlink()
        self.journal.unlink(missing_ok=True)
        return self.out

    def close(self) -> None:
        self._data.close()
        self._log.close()
