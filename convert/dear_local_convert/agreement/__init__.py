"""Stage 3: the reference file, runs of a slice on any backend, the check with its gates, metrics and report."""
