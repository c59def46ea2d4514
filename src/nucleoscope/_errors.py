"""The package exception."""

from __future__ import annotations

import os

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input: the message names the file (when there is one) and the problem.

    Parameters
    ----------
    problem : str
        What is wrong and, where possible, how to fix it.
    path : str or os.PathLike, optional
        The offending file; it leads the message.
    """

    def __init__(self, problem: str, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)
