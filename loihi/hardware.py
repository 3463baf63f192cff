"""Detect Loihi 2 before touching ``Loihi2HwCfg``.

Without the lava-loihi extension, compiling for hardware fails deep inside Lava
with ``NameError: CLoihiProcessModel`` and leaves half-built processes behind
(docs/design.md §8), so lrfdyn checks first and fails in one line.
"""

from __future__ import annotations

import importlib.util

from lrfdyn.errors import HardwareUnavailableError


def loihi2_status() -> tuple[bool, str]:
    """(available, reason) without building any process."""
    if importlib.util.find_spec("lava.magma.compiler.subcompilers.nc") is None:
        return False, (
            "the lava-loihi extension is not installed (it is distributed by Intel to "
            "INRC members); install it, or use `lrfdyn simulate` for the CPU simulator"
        )
    import lrfdyn.loihi.compat  # noqa: F401
    from lava.utils.system import Loihi2

    if not Loihi2.is_loihi2_available:
        return False, (
            "lava-loihi is installed but no Loihi 2 system is reachable "
            "(set up the host as in the INRC instructions); use `lrfdyn simulate` meanwhile"
        )
    return True, "Loihi 2 available"


def require_loihi2() -> None:
    ok, reason = loihi2_status()
    if not ok:
        raise HardwareUnavailableError(f"cannot deploy: {reason}")
