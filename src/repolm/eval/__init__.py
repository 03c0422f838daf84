"""Evaluation on the repository's future: bits per byte, completion, next change, commit
messages, suites, code benchmarks."""
