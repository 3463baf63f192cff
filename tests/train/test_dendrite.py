"""Tests for lrfdyn.train.functional.dendrite: the LRF-Dyn token dynamics.

The FFT convolution with ``K_m = C A^m Γ`` must equal the token-by-token recurrence
``x_n = A x_{n−1} + Γ u_n, y_n = C x_n`` to float64 round-off (tolerance 1e-5).
"""

from __future__ import annotations

import pytest
import torch

from lrfdyn.errors import ValidationError
from lrfdyn.train.functional import dendrite as dfn
from lrfdyn.train.models.attention import AttentionConfig, LRFDyn

TOL = 1e-5


def random_parameters(d: int, k: int, seed: int) -> tuple[dfn.DendriteParameters, torch.Tensor,
                                                           torch.Tensor]:
    """Random stable {A, Γ, C} in float64, with τ spread over (1, ~40) and strong coupling."""
    g = torch.Generator().manual_seed(seed)
    tau = dfn.tau_from_raw(torch.randn(d, k, generator=g, dtype=torch.float64) * 3.0)
    beta = dfn.beta_from_raw(torch.randn(d, k - 1, generator=g, dtype=torch.float64) * 2.0, tau)
    gamma = torch.randn(d, k, generator=g, dtype=torch.float64)
    c = torch.randn(d, k, generator=g, dtype=torch.float64)
    return dfn.DendriteParameters(dfn.build_a(tau, beta), gamma, c), tau, beta


@pytest.mark.parametrize("n", [16, 49, 196])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fft_equals_recurrence(n: int, seed: int) -> None:
    d, k = 6, 8
    p, _, _ = random_parameters(d, k, seed)
    g = torch.Generator().manual_seed(100 + seed)
    spikes = (torch.rand(2, 3, n, d, generator=g, dtype=torch.float64) < 0.3).double()
    graded = torch.randn(2, n, d, generator=g, dtype=torch.float64)
    for u in (spikes, graded):
        y_fft = dfn.causal_conv_fft(u, dfn.dendrite_kernel(p, n))
        y_rec, _ = dfn.dendrite_recurrence(u, p)
        assert y_fft.dtype == torch.float64
        assert (y_fft - y_rec).abs().max().item() <= TOL


@pytest.mark.parametrize("n", [1, 5, 16])
def test_kernel_is_c_a_power_gamma(n: int) -> None:
    p, _, _ = random_parameters(3, 4, seed=7)
    kern = dfn.dendrite_kernel(p, n)
    for m in range(n):
        expected = torch.einsum("dk,dkj,dj->d", p.c, torch.linalg.matrix_power(p.A, m), p.gamma)
        torch.testing.assert_close(kern[m], expected)


def test_a_is_tridiagonal_with_stated_entries() -> None:
    p, tau, beta = random_parameters(5, 8, seed=3)
    a = p.A
    torch.testing.assert_close(torch.diagonal(a, dim1=-2, dim2=-1), 1.0 - 1.0 / tau)
    torch.testing.assert_close(torch.diagonal(a, offset=1, dim1=-2, dim2=-1), beta)
    torch.testing.assert_close(torch.diagonal(a, offset=-1, dim1=-2, dim2=-1), beta)
    band = torch.ones(8, 8).triu(-1).tril(1).bool()
    assert (a[:, ~band] == 0).all()


def test_a_is_stable_for_extreme_raw_parameters() -> None:
    raw_tau = torch.tensor([[-30.0, 30.0, 0.0, 5.0]], dtype=torch.float64)
    tau = dfn.tau_from_raw(raw_tau)
    beta = dfn.beta_from_raw(torch.full((1, 3), 50.0, dtype=torch.float64), tau)
    radius = torch.linalg.eigvalsh(dfn.build_a(tau, beta)).abs().max()
    assert radius < 1.0


def test_raw_from_tau_inverts_tau_from_raw() -> None:
    tau = torch.tensor([1.01, 2.0, 16.0, 100.0], dtype=torch.float64)
    torch.testing.assert_close(dfn.tau_from_raw(dfn.raw_from_tau(tau)), tau)
    with pytest.raises(ValidationError):
        dfn.raw_from_tau(torch.tensor([1.0]))


def test_state_is_k_times_d_per_stream() -> None:
    d, k, n = 16, 8, 49
    p, _, _ = random_parameters(d, k, seed=4)
    _, state = dfn.dendrite_recurrence(torch.ones(1, n, d, dtype=torch.float64), p)
    assert state.x.numel() == k * d == dfn.state_size(d, k)
    module = LRFDyn(AttentionConfig(dim=d, heads=2, k_dendrites=k))
    assert module.streaming_state_size() == k * d


def test_module_paths_agree() -> None:
    torch.manual_seed(0)
    module = LRFDyn(AttentionConfig(dim=8, heads=2, k_dendrites=4, token="kv", gate="q")).double()
    module.eval()
    x = (torch.rand(2, 3, 16, 8, dtype=torch.float64) < 0.4).double()
    u = (torch.rand(3, 16, 8, dtype=torch.float64) < 0.4).double()
    with torch.no_grad():
        assert (module.recurrence(u) - dfn.causal_conv_fft(u, module.kernel(16))).abs().max() <= TOL
        out_fft, _ = module(x, (4, 4))
        module.path = "recurrence"
        out_rec, _ = module(x, (4, 4))
    assert (out_fft - out_rec).abs().max().item() <= TOL


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValidationError):
        dfn.build_a(torch.full((2, 4), 2.0), torch.zeros(2, 4))
    p, _, _ = random_parameters(3, 2, seed=0)
    with pytest.raises(ValidationError):
        dfn.causal_conv_fft(torch.zeros(10, 3, dtype=torch.float64), dfn.dendrite_kernel(p, 5))
    with pytest.raises(ValidationError):
        dfn.dendrite_kernel(p, 0)
