import pytest

from lrfdyn.train import units


@pytest.mark.parametrize("tau", [2.0, 4.0, 8.0, 32.0])
def test_tau_dv_round_trip(tau: float) -> None:
    assert units.dv_to_tau(units.tau_to_dv(tau)) == pytest.approx(tau)


def test_spikformer_lif_maps_to_dv_2048() -> None:
    assert units.tau_to_dv(2.0) == 2048


def test_tau_of_one_step_is_out_of_loihi_range() -> None:
    from lrfdyn.errors import LoihiRangeError

    # dv would be 4096; Loihi's 12-bit decay stops at 4095.
    with pytest.raises(LoihiRangeError, match="12-bit"):
        units.tau_to_dv(1.0)


@pytest.mark.parametrize("tau", [1.5, 2.0, 10.0])
def test_leak_and_seconds_are_inverses(tau: float) -> None:
    assert units.tau_from_leak(units.leak_factor(tau)) == pytest.approx(tau)
    assert units.seconds_to_tau(units.tau_to_seconds(tau)) == pytest.approx(tau)


def test_tau_two_steps_is_exact_in_seconds() -> None:
    # Exported graphs store tau in float64 seconds; it must read back as exactly 2 steps.
    assert units.seconds_to_tau(units.tau_to_seconds(2.0)) == 2.0
