"""Stage one of the agreement check: the full-precision reference, recorded once.

- :mod:`.record`: rank an eval slice with the bf16 checkpoint in transformers, or with inference
  servers, and write the reference file (torch and transformers only here, imported when recording);
- :mod:`.file`: the file's format, written by :func:`record_reference` and read by :func:`read_reference`.

Stage two, checking quants against the file, is :mod:`dear_local_convert.agreement`; it reads the
file through :func:`read_reference` and never records.
"""

from dear_local_convert.reference.file import FORMAT, read_reference, record_reference
from dear_local_convert.reference.record import write_reference, write_server_reference

__all__ = ["FORMAT", "read_reference", "record_reference", "write_reference", "write_server_reference"]
