"""Make lava-nc 0.10 importable on Python 3.11.

lava-nc 0.10 declares Python < 3.11. On 3.11 the import of
``lava.magma.compiler.var_model`` fails: a dataclass there uses an instance of
another (unhashable) dataclass as a field default, and Python 3.11 rejects every
unhashable default, where 3.10 rejected only ``list``, ``dict`` and ``set``.

:func:`install` wraps :func:`dataclasses._process_class` so that, for classes
defined in ``lava.*`` only, such a default becomes a ``default_factory`` that
returns the same shared instance, and the class attribute is restored afterwards.
That is exactly the 3.10 behaviour: every instance shares the default object.
Classes outside ``lava.*`` are untouched and still get 3.11's check.

Import this module before any ``lava`` import; every lrfdyn module that imports
lava does so through :func:`lrfdyn.loihi.compat.install` (called on import).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

_PATCH_FLAG = "_lrfdyn_lava_compat"


def _needs_factory(value: Any) -> bool:
    """True for a default that 3.11 rejects but 3.10 accepted."""
    if isinstance(value, (list, dict, set)) or isinstance(value, dataclasses.Field):
        return False
    return type(value).__hash__ is None


def _wrap(process_class: Any) -> Any:
    def process_class_lava_compat(cls: type, *args: Any, **kwargs: Any) -> Any:
        if not cls.__module__.startswith("lava."):
            return process_class(cls, *args, **kwargs)
        shared = {
            name: value
            for name in cls.__dict__.get("__annotations__", {})
            if _needs_factory(value := cls.__dict__.get(name, dataclasses.MISSING))
            and value is not dataclasses.MISSING
        }
        for name, value in shared.items():
            setattr(cls, name, dataclasses.field(default_factory=lambda v=value: v))
        result = process_class(cls, *args, **kwargs)
        for name, value in shared.items():
            setattr(result, name, value)
        return result

    setattr(process_class_lava_compat, _PATCH_FLAG, True)
    return process_class_lava_compat


def install() -> None:
    """Install the shim (idempotent; a no-op before Python 3.11)."""
    if sys.version_info < (3, 11):
        return
    if getattr(dataclasses._process_class, _PATCH_FLAG, False):  # type: ignore[attr-defined]
        return
    dataclasses._process_class = _wrap(dataclasses._process_class)  # type: ignore[attr-defined]


install()
