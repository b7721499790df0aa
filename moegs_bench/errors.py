"""Whose fault an error is: the user's input, or moegs-bench's own code (README, "CLI reference").

* :class:`InputError`: a value failed a check; the message names the value (a tensor, a field, a
  file) and what was expected. On its own it does not say where the value came from: the same
  check guards the rasterizer against a bad scene file and against a bug that computed NaN.
* :class:`UserInputError`: an :class:`InputError` about input the user gave and the program
  validated: options and config keys, dataset files, run folders, checkpoints the user named. The
  CLI prints it as one line and exits with code 2. ``DatasetError``, ``ConfigError``,
  ``RunFolderError``, ``CheckpointError``, ``ResultsError`` and ``ExpertError`` are such errors.
* :class:`InternalError`: a check failed on values the program computed itself (an expert's
  state during training, a render during evaluation): a bug. :func:`computed_values` marks the
  code that works on such values; a plain :class:`InputError` raised inside becomes an
  :class:`InternalError`. The CLI reports it, like any unexpected exception, as a bug: a short
  message, the traceback in a log file, exit code 1.

Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["InputError", "InternalError", "UserInputError", "computed_values"]


class InputError(ValueError):
    """A value failed a check: the message names the field and what was expected."""


class UserInputError(InputError):
    """Bad input the user gave (an option, a config key, a dataset, a run folder, a checkpoint):
    the CLI prints one line and exits with code 2."""


class InternalError(RuntimeError):
    """A check failed on a value the program computed itself: a bug, not a user mistake."""


@contextmanager
def computed_values(what: str) -> Iterator[None]:
    """Inside, checked values are the program's own (``what`` says which work, e.g. ``"training
    stg"``): a plain :class:`InputError` raised there is an :class:`InternalError`.
    :class:`UserInputError` (a corrupt image decoded late, a checkpoint of another run) passes
    through unchanged."""
    try:
        yield
    except UserInputError:
        raise
    except InputError as exc:
        raise InternalError(f"{what}: {exc}") from exc
