"""Errors that mean "fix the config or the data", which run.py prints as one line."""


class ConfigError(ValueError):
    """A config value or an input file that flaxcls cannot use; the message says what to change."""
