"""The errors charlm reports to users as one line (never a traceback).

Every failure the user can cause (a bad file, a bad option, a damaged
checkpoint) raises a subclass of :class:`CharlmError`; the CLI prints its
message on stderr and exits with code 1.
"""


class CharlmError(Exception):
    """A problem with the user's input, explained in one line."""


class CorpusError(CharlmError):
    """The corpus cannot be read or used."""


class VocabError(CharlmError):
    """A vocabulary file is missing, malformed or inconsistent."""


class ConfigError(CharlmError):
    """An option or YAML configuration value is invalid."""


class CheckpointError(CharlmError):
    """A checkpoint is missing, damaged, or not a charlm checkpoint."""


class TrainingDiverged(CharlmError):
    """Training produced too many non-finite losses or gradients in a row."""
