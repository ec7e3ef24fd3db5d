"""Exceptions out of nested task groups, for a one-line message."""

from __future__ import annotations


def first_leaf(exc: BaseException) -> BaseException:
    """The first exception that is not a group, following each group's first member."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
