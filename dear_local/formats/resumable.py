"""Batch output that loses nothing: written query by query, resumed where a killed run stopped.

``rerank --out OUT`` writes each finished query's lines to ``OUT.partial`` and, once they are
flushed to disk, appends one line to the journal ``OUT.partial.journal``: ``[qid, length of
OUT.partial after it]`` as JSON. Started again with the same ``--out``, the run cuts
``OUT.partial`` back to the last length the journal vouches for (dropping a query that was cut
short), skips the queries the journal lists, and goes on. When every query is done,
``OUT.partial`` is renamed to ``OUT`` and the journal removed. Kill it at any point and start
it again: the result holds every query exactly once, in input order.

The journal's first line records what the output depends on (format, model, profile, input
queries); a restart with anything different is refused, and ``--force`` starts over.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import UserInputError
from ..fileio import check_writable, refuse_overwrite


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
        self.done: list[str] = self._resume(key)
        self._data = open(self.partial, "ab")
        self._log = open(self.journal, "a", encoding="utf-8")
        if not self.done and self._log.tell() == 0:
            self._append_journal(json.dumps(key))

    def _resume(self, key: dict) -> list[str]:
        """The qids already written, after cutting ``OUT.partial`` back to what the journal vouches for."""
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
        entries: list[tuple[str, int]] = []
        for line in lines[1:]:
            try:
                qid, length = json.loads(line)
            except (ValueError, TypeError):
                break  # the end, or a line a kill cut short
            entries.append((qid, length))
        size = entries[-1][1] if entries else 0
        have = self.partial.stat().st_size if self.partial.is_file() else 0
        if have < size:
            raise UserInputError(
                f"{self.partial} is shorter than its journal says ({have} < {size} bytes); pass --force to start over"
            )
        with open(self.partial, "ab") as f:
            f.truncate(size)
        with open(self.journal, "w", encoding="utf-8") as f:  # without a line a kill may have cut short
            f.write("".join(line + "\n" for line in [lines[0], *(json.dumps(e) for e in entries)]))
        return [qid for qid, _ in entries]

    def _append_journal(self, line: str) -> None:
        self._log.write(line + "\n")
        self._log.flush()
        os.fsync(self._log.fileno())

    def write(self, qid: str, lines: list[str]) -> None:
        """Add one finished query: its lines, then its journal entry once they are on disk."""
        self._data.write("".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass"))
        self._data.flush()
        os.fsync(self._data.fileno())
        self.done.append(qid)
        self._append_journal(json.dumps([qid, self._data.tell()]))

    def finish(self) -> Path:
        """Every query is written: ``OUT.partial`` becomes ``OUT``."""
        self.close()
        os.replace(self.partial, self.out)
        self.journal.unlink(missing_ok=True)
        return self.out

    def close(self) -> None:
        self._data.close()
        self._log.close()
