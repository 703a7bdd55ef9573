"""Moved: ranking a slice's queries is :mod:`dear_local_convert.slice_runs`; this name keeps older imports working."""

from dear_local_convert.slice_runs import run_queries, vocab_fingerprint

__all__ = ["run_queries", "vocab_fingerprint"]
