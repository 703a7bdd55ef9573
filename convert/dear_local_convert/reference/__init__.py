"""Stage one of the agreement check: the full-precision reference, recorded once.

- :mod:`.record`: rank an eval slice with the bf16 checkpoint in transformers, or with inference
  servers, and write the reference file (torch and transformers only here, imported when recording);
- :mod:`.file`: the file's format, written by :func:`record_reference` and read by :func:`read_reference`;
- :mod:`.pointwise`: a pointwise ranker's (DeAR-P's) reference: transformers' scores for every
  (query, passage) pair, written by :func:`write_pointwise_reference`, read by :func:`read_pointwise_reference`.

Stage two, checking quants against the file, is :mod:`dear_local_convert.agreement`; it reads the
file through :func:`read_reference` and never records.
"""

from dear_local_convert.reference.file import FORMAT, read_reference, record_reference
from dear_local_convert.reference.pointwise import read_pointwise_reference, write_pointwise_reference
from dear_local_convert.reference.record import write_reference, write_server_reference

__all__ = ["FORMAT", "is_pointwise_reference", "read_pointwise_reference", "read_reference", "record_reference",
           "write_pointwise_reference", "write_reference", "write_server_reference"]


def is_pointwise_reference(path) -> bool:
    """Whether the file at ``path`` starts with a pointwise reference's header (False for anything else)."""
    import json
    from pathlib import Path

    from dear_local_convert.reference.pointwise import FORMAT as POINTWISE_FORMAT

    try:
        with open(Path(path), encoding="utf-8", errors="replace") as f:
            first = f.readline()
        return json.loads(first).get("format") == POINTWISE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False
