"""Batch output that loses nothing: written query by query, resumed where a killed run stopped.

``rerank --out OUT`` writes each finished query's lines to ``OUT.partial`` and, once they are
flushed to disk, appends one line to the journal ``OUT.partial.journal``: ``[qid, length of
OUT.partial after it, the query's position in the input]`` as JSON. Queries may finish in any
order (several in flight on a server fleet). Started again with the same ``--out``, the run cuts
``OUT.partial`` back to the last length the journal vouches for (dropping a query that was cut
short), skips the queries the journal lists, and goes on. When every query is done, the
queries are put in input order into ``OUT`` (atomically) and the partial files removed. Kill
it at any point and start it again: the result holds every query exactly once, in input order.

The journal's first line records everything the output depends on (see :func:`run_key`); a
restart with anything different is refused with the names of what changed, and ``--force``
starts over (a journal of another job that holds no finished query is simply started over). A journal that is empty, or whose first line is cut short or unreadable, holds
nothing done yet: the run starts from the first query. Journal lines after the first one that
is cut short, unreadable or inconsistent (a length beyond ``OUT.partial``, an unknown query)
are dropped.

One run at a time: the journal is held with an exclusive lock (``flock``) while a run writes,
and a second run on the same ``--out`` is refused at once. (Where ``fcntl`` is missing, as on
Windows, or the file system has no locks, runs are not locked.)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import IO, Iterable

from ..errors import UserInputError
from ..fileio import atomic_path, check_writable, refuse_output_file, write_errors
from .request import Request

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

RESUME_HINT = "free some space, then run the same command again: the queries already written are kept"

# What each key of a run key is called in the message that refuses a changed job.
KEY_NAMES = {
    "format": "--format",
    "model": "model (-m)",
    "model_file": "model file (its path, size or modification time)",
    "profile": "profile (--template, --decoding, --window, --stride)",
    "template_text": "template text",
    "top_n": "--top-n",
    "queries": "number of queries",
    "qids_sha256": "query ids",
    "inputs_sha256": "input (query texts, documents or their ids)",
    "depth": "--depth",
    "skip_missing": "--skip-missing",
    "lora": "--lora or --lora-scale (or the adapter file)",
    "flash_attn": "flash attention (--flash-attn/--no-flash-attn; it is on by default now, so "
                  "--no-flash-attn finishes a run started without it)",
    "served_model": "--served-model",
    "first_stage": "--first-stage or --listwise-depth (or the pointwise model file)",
}


def file_identity(path: str | Path | None) -> dict | None:
    """A cheap identity of a file: its absolute path, size in bytes and modification time (ns).

    Hashing a 5 GB GGUF would take longer than many batches; a changed file changes its size or
    modification time. ``None`` for no file.
    """
    if path is None:
        return None
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p.absolute())}
    return {"path": str(p.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def requests_digest(requests: Iterable[Request]) -> str:
    """sha256 of everything the requests carry into the output: qids, query texts, docids and
    document texts, and for rank_llm records their query and candidate objects. It changes with
    the content of any input file (run, topics, corpus, JSONL, docs) and with ``--depth`` and
    ``--skip-missing`` where they change what is reranked.
    """
    h = hashlib.sha256()
    for req in requests:
        fields = [req.qid, req.query, req.docids, req.documents,
                  getattr(req, "query_record", None), getattr(req, "candidates", None)]
        h.update(json.dumps(fields, sort_keys=True, ensure_ascii=False, default=repr)
                 .encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()


def run_key(fmt: str, model: str, profile: dict, qids: list[str], top_n: int | None, **more) -> dict:
    """What a resumed run must share with the one that started the file.

    ``more`` adds fields (JSON values) that also change the output, each named in
    ``KEY_NAMES``: ``inputs_sha256`` (:func:`requests_digest`), ``model_file`` and ``lora``
    (:func:`file_identity`), ``template_text``, ``depth``, ``skip_missing``, ``served_model``, ``first_stage``.
    """
    digest = hashlib.sha256("\n".join(qids).encode("utf-8", "surrogatepass")).hexdigest()
    return {"format": fmt, "model": model, "profile": profile, "top_n": top_n, "queries": len(qids),
            "qids_sha256": digest, **more}


def _lock_error(out: Path, journal: Path) -> UserInputError:
    return UserInputError(
        f"another dear-local run is writing {out} (it holds the lock on {journal}); wait for it to finish, "
        "or pass another --out"
    )


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting: False when another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            return True  # a file system without locks: run unlocked
        raise
    return True


def real_out(out: str | Path) -> Path:
    """``OUT`` with every symbolic link resolved (the last one too, even if it dangles), so two
    names of one file lock and write the same journal and the link itself is never replaced."""
    return Path(os.path.realpath(Path(out).expanduser()))


def _odd_file_error(path: Path) -> UserInputError:
    return UserInputError(
        f"{path} is not a regular file (a link, a pipe or a device); remove it, or pass another --out"
    )


def refuse_odd_files(out: str | Path) -> None:
    """Raise ``UserInputError`` when ``OUT.partial`` or ``OUT.partial.journal`` exists but is
    not a regular file (a symbolic link, a FIFO, a device): reading one could hang or never end."""
    out = real_out(out)
    for path in (out.with_name(out.name + ".partial"), out.with_name(out.name + ".partial.journal")):
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            continue
        if not stat.S_ISREG(mode):
            raise _odd_file_error(path)


def refuse_busy(out: str | Path) -> None:
    """Raise ``UserInputError`` when another run holds ``OUT``'s journal, or when the partial
    files are not regular files; checked before a model loads."""
    refuse_odd_files(out)
    out = real_out(out)
    journal = out.with_name(out.name + ".partial.journal")
    try:
        fd = os.open(journal, os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
    except OSError:
        return  # no journal: nobody writes it (yet); the lock taken later decides
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _odd_file_error(journal)
        if not _try_lock(fd):
            raise _lock_error(out, journal)
    finally:
        os.close(fd)  # closing releases the probe's lock


# A journal is opened without following a link and without waiting (a FIFO would block).
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _open_locked(out: Path, journal: Path) -> IO[bytes]:
    """``journal`` opened for reading and writing (made if missing) and locked by this process.

    Raises ``UserInputError`` when it is not a regular file (a link, a FIFO, a device).
    """
    for _ in range(20):
        try:
            fd = os.open(journal, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _NONBLOCK, 0o666)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise _odd_file_error(journal) from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise _odd_file_error(journal)
            if not _try_lock(fd):
                raise _lock_error(out, journal)
            here = os.fstat(fd)
            try:
                now = os.stat(journal)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_dev, now.st_ino) == (here.st_dev, here.st_ino):
            return os.fdopen(fd, "r+b")
        os.close(fd)  # the run that held it finished and removed it meanwhile: lock the new one
    raise _lock_error(out, journal)


class ResumableOutput:
    """``OUT`` built query by query; see the module docstring.

    ``qids``, when given, are the input's query ids in input order: a journal line must name the
    query at its position, or it and the lines after it are dropped.

    Raises:
        UserInputError: ``OUT`` is a directory or not a regular file; ``OUT`` exists and ``force``
            is not set; another run is writing ``OUT``; or an unfinished ``OUT.partial`` was
            started with other options or inputs (the message names them) and ``force`` is not set.
        DiskFullError: the disk holding ``OUT`` is full (here, or later in ``write``/``finish``).
    """

    def __init__(self, out: str | Path, key: dict, *, force: bool = False, qids: list[str] | None = None) -> None:
        self.out = real_out(out)
        key = json.loads(json.dumps(key))  # as the journal will give it back (tuples become lists)
        refuse_output_file(self.out, force)
        self.partial = self.out.with_name(self.out.name + ".partial")
        self.journal = self.out.with_name(self.out.name + ".partial.journal")
        check_writable(self.out.parent, target=self.out)
        self._data: IO[bytes] | None = None
        self._fresh = False  # True while this run has nothing of an earlier one to keep
        with write_errors(self.journal, RESUME_HINT):
            self._log = _open_locked(self.out, self.journal)
        try:
            refuse_output_file(self.out, force)  # again, under the lock: a run that held it may just have finished
            refuse_odd_files(self.out)  # under the lock: OUT.partial is no link, FIFO or device
            with write_errors(self.partial, RESUME_HINT):
                if force:
                    self._start_over()
                # (qid, end offset, input position)
                self._entries: list[tuple[str, int, int]] = self._resume(key, qids)
                self._data = open(self.partial, "ab")
                if self._fresh:
                    self._append_journal(json.dumps(key))
        except BaseException:
            self._abandon()
            raise
        self.done: list[str] = [qid for qid, _, _ in self._entries]

    @property
    def done_positions(self) -> set[int]:
        """Input positions of the queries already written."""
        return {pos for _, _, pos in self._entries}

    def _start_over(self) -> list:
        self._log.seek(0)
        self._log.truncate(0)
        with open(self.partial, "ab") as f:
            f.truncate(0)
        self._fresh = True
        return []

    def _resume(self, key: dict, qids: list[str] | None) -> list[tuple[str, int, int]]:
        """The queries already written, after cutting ``OUT.partial`` and the journal back to what
        the journal vouches for."""
        self._log.seek(0)
        lines = self._log.read().split(b"\n")
        # lines[-1] follows the last newline: empty, or a line a kill cut short
        try:
            recorded = json.loads(lines[0]) if len(lines) > 1 else None
        except (ValueError, RecursionError):  # damaged (or hostile): as good as no first line
            recorded = None
        if not isinstance(recorded, dict) or not recorded:
            return self._start_over()  # empty, cut short before its first line was whole, or not a run key: nothing done yet
        if recorded != key and len(lines) <= 2:
            return self._start_over()  # another job, but not one query of it was written: nothing to keep
        if recorded != key:
            changed = sorted(KEY_NAMES.get(k, k) for k in key.keys() | recorded.keys() if recorded.get(k) != key.get(k))
            raise UserInputError(
                f"{self.partial} is an unfinished run made with a different {', '.join(changed)}; "
                "rerun with the same options and inputs to resume it, or pass --force to start over"
            )
        have = self.partial.stat().st_size if self.partial.is_file() else 0
        entries: list[tuple[str, int, int]] = []
        seen: set[int] = set()
        kept = len(lines[0]) + 1
        for line in lines[1:-1]:
            entry = _entry(line, len(entries), entries[-1][1] if entries else 0, have, qids, seen)
            if entry is None:
                break  # a line a kill or a full disk cut short, or not one this run wrote: it and the rest go
            entries.append(entry)
            seen.add(entry[2])
            kept += len(line) + 1
        self._log.truncate(kept)
        with open(self.partial, "ab") as f:
            f.truncate(entries[-1][1] if entries else 0)
        return entries

    def _append_journal(self, line: str) -> None:
        self._log.seek(0, os.SEEK_END)
        self._log.write(line.encode("utf-8") + b"\n")
        self._log.flush()
        os.fsync(self._log.fileno())
        self._fresh = False

    def write(self, qid: str, lines: list[str], position: int | None = None) -> None:
        """Add one finished query (at ``position`` in the input; default: next in order):
        its lines, then its journal entry once they are on disk.

        Raises ``DiskFullError`` (naming the disk) when they do not fit; the queries written before stay.
        """
        pos = len(self._entries) if position is None else position
        with write_errors(self.partial, RESUME_HINT):
            start = self._data.tell()
            try:
                self._data.write("".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass"))
                self._data.flush()
                os.fsync(self._data.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    self._data.truncate(start)  # the journal does not vouch for these bytes anyway
                raise
            end = self._data.tell()
            self._append_journal(json.dumps([qid, end, pos]))
        self.done.append(qid)
        self._entries.append((qid, end, pos))

    def finish(self) -> Path:
        """Every query is written: ``OUT`` gets them in input order, and the partial files go.

        Raises ``DiskFullError`` when ``OUT`` does not fit; the partial files are kept, and the
        same command run again finishes the file.
        """
        self._data.close()
        spans, start = [], 0
        for _, end, pos in self._entries:
            spans.append((pos, start, end))
            start = end
        try:
            with write_errors(self.out, RESUME_HINT):
                if [pos for pos, _, _ in spans] == sorted(pos for pos, _, _ in spans):
                    os.replace(self.partial, self.out)
                else:
                    data = self.partial.read_bytes()
                    with atomic_path(self.out, suffix=".sorting") as tmp:  # OUT.partial is the data itself
                        with open(tmp, "wb") as f:
                            for _, a, b in sorted(spans):
                                f.write(data[a:b])
                            f.flush()
                            os.fsync(f.fileno())
                    self.partial.unlink()
                self.journal.unlink(missing_ok=True)  # still locked: no other run takes it half-way
        finally:
            self._log.close()
        return self.out

    def _abandon(self) -> None:
        """Release the lock after a failed start; files this run made and left empty go."""
        if self._fresh:
            for p in (self.journal, self.partial):
                with contextlib.suppress(OSError):
                    if p.stat().st_size == 0:
                        p.unlink()
        self.close()

    def close(self) -> None:
        """Close the files and release the lock; what is written stays for a resume."""
        for f in (self._data, self._log):
            if f is not None:
                with contextlib.suppress(OSError):  # a flush that finds the disk full: the journal decides
                    f.close()


def _entry(line: bytes, index: int, prev_end: int, have: int, qids: list[str] | None,
           seen: set[int]) -> tuple[str, int, int] | None:
    """A journal line as ``(qid, end, position)``, or None when it cannot be trusted."""
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):  # cut short, damaged, too deep, a number too long
        return None
    if not isinstance(entry, list) or len(entry) not in (2, 3):
        return None
    qid, end = entry[0], entry[1]
    pos = entry[2] if len(entry) == 3 else index  # journals of 0.x runs are in input order
    if not isinstance(qid, str) or any(isinstance(v, bool) or not isinstance(v, int) for v in (end, pos)):
        return None
    if not prev_end <= end <= have or pos < 0 or pos in seen:
        return None  # data a full disk or a kill lost, or a line this run did not write
    if qids is not None and (pos >= len(qids) or qids[pos] != qid):
        return None
    return qid, end, pos
