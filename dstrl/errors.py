"""Errors of the modules that import torch or Gymnasium, defined apart from them, so that the
command line catches them without paying those imports for ``report`` or ``--help``."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or unsafe to load."""


class CaptureError(RuntimeError):
    """Capturing device work as a graph failed (an operation a graph cannot hold)."""


class PolicyError(ValueError):
    """A file is not a dstrl policy, or a policy is used in a way it cannot be."""


class WorkerError(RuntimeError):
    """An environment failed in a worker process; the message carries its error."""
