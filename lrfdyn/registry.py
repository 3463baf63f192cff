"""Dispatch tables: one dict from a type to the function that handles it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def registrar(table: dict[type, Any]) -> Callable[[type], Callable[[F], F]]:
    """A decorator factory: ``@register(T)`` stores the decorated function in ``table[T]``."""

    def register(key: type) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            table[key] = fn
            return fn

        return deco

    return register
