"""Errors that mean "fix the config or the data", or "the run stopped on purpose", which run.py
prints as one line."""


class ConfigError(ValueError):
    """A config value or an input file that flaxcls cannot use; the message says what to change."""


class DataError(ConfigError):
    """A data file or dataset that flaxcls cannot train on as it is (a wrong type, a label out of
    range, a single class, an empty split, a broken file); the message names the file, what is
    wrong and what to do."""


class TrainingStopped(RuntimeError):
    """Training stopped itself (a non-finite or diverging loss); the message names the step, the
    checkpoint kept and what to try."""


class ContractError(TypeError):
    """A model or a batch that does not keep the contract of flaxcls's steps (see
    `flaxcls.core.steps`); the message says what to change."""
