"""Moved: the reference stage is :mod:`dear_local_convert.reference`; this name keeps older imports working."""

from dear_local_convert.reference import FORMAT, read_reference, record_reference, write_reference, write_server_reference

__all__ = ["FORMAT", "read_reference", "record_reference", "write_reference", "write_server_reference"]
