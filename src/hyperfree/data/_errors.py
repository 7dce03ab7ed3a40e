"""The data package's one error type (its own module, so every loader can raise it without
importing the dataset types that import the loaders)."""
from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset file is missing, corrupt or unsafe; the one-line message names file and fix."""
