"""Helpers that the repository's tests and benchmarks share (toy runs, launching `run.py`,
killing it, served models, XLA flag sets). Not part of the library's API; nothing in the
library imports them."""
