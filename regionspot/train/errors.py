"""Errors of a training run that the user can act on; the command line reports each as one
``error: ...`` line with exit status 2 (:func:`regionspot.cli.main.user_error_types`).

Kept free of heavy imports, so that the command line can name these types cheaply. A launch that
is not a usable ``torchrun`` environment is a :class:`regionspot.processes.LaunchError` (shared
with evaluation, so defined below both).
"""

from __future__ import annotations


class TrainingError(Exception):
    """A training run cannot start or go on, for a reason the message says how to fix."""


class TrainingDivergedError(TrainingError, FloatingPointError):
    """The loss became NaN or infinite (a learning rate too high, or broken data)."""
