"""Exceptions raised by alws. Each names the problem and the offending values."""


class ALWSError(Exception):
    """Base class of every error alws raises on purpose."""


class ModelProtocolError(ALWSError, TypeError):
    """The model does not follow the protocol (``sample(n) -> (z, x)``, ``log_joint(z, x) -> [n]``)."""


class DataError(ALWSError, ValueError):
    """Data that cannot be used: empty, non-finite, or shaped differently from the model's samples."""


class NonFiniteError(ALWSError, FloatingPointError):
    """A loss or gradient became NaN or infinite during training."""


class NotPositiveDefiniteError(ALWSError, ArithmeticError):
    """A kernel system stayed non-positive-definite after adding jitter."""


class CheckpointError(ALWSError, ValueError):
    """A checkpoint that cannot be resumed here (another model, another config, a corrupt file)."""


class ConfigError(ALWSError, ValueError):
    """An unknown experiment, preset or config key, or a value out of range."""
