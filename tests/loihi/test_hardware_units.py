"""Unit tests of loihi/hardware.py: which of its three answers ``loihi2_status`` gives, and
that ``require_loihi2`` raises exactly when it says no. No Lava run, no trained model: the
two facts it reads (is lava-loihi installed, is a Loihi 2 reachable) are set by hand."""

from __future__ import annotations

import importlib.util

import pytest

import lrfdyn.loihi.compat  # noqa: F401  (before any lava import)
from lava.utils import system

from lrfdyn.errors import HardwareUnavailableError
from lrfdyn.loihi import hardware

NC = "lava.magma.compiler.subcompilers.nc"


@pytest.fixture()
def world(monkeypatch):
    """set(installed, reachable): what find_spec finds for lava-loihi, and what Lava says
    about a reachable Loihi 2."""
    real = importlib.util.find_spec

    def put(installed: bool, reachable: bool) -> None:
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: (object() if installed else None) if name == NC
                            else real(name, *a))
        monkeypatch.setattr(system.Loihi2, "is_loihi2_available", reachable)

    return put


def test_without_lava_loihi_the_extension_is_named_and_no_system_is_asked(world):
    world(installed=False, reachable=True)  # a reachable chip is no use without it
    ok, reason = hardware.loihi2_status()
    assert ok is False
    assert reason.startswith("the lava-loihi extension is not installed")
    assert "lrfdyn simulate" in reason


def test_with_lava_loihi_but_no_system_the_host_is_named(world):
    world(installed=True, reachable=False)
    ok, reason = hardware.loihi2_status()
    assert ok is False
    assert reason.startswith("lava-loihi is installed but no Loihi 2 system is reachable")


def test_with_lava_loihi_and_a_system_it_is_available(world):
    world(installed=True, reachable=True)
    assert hardware.loihi2_status() == (True, "Loihi 2 available")
    assert hardware.require_loihi2() is None


@pytest.mark.parametrize("installed", [False, True])
def test_require_raises_the_status_reason_in_one_line(world, installed):
    world(installed=installed, reachable=False)
    _, reason = hardware.loihi2_status()
    with pytest.raises(HardwareUnavailableError) as err:
        hardware.require_loihi2()
    assert str(err.value) == f"cannot deploy: {reason}"


def test_this_machine_has_no_loihi2():
    """The real answer here: no lava-loihi, so no deploy (what CI relies on)."""
    ok, reason = hardware.loihi2_status()
    assert ok is False and "lava-loihi" in reason
