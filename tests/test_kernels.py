import math

import pytest
import torch

from alws import kernels


def test_squared_distances_match_cdist_and_are_non_negative():
    x, y = torch.randn(50, 4, dtype=torch.float64), torch.randn(30, 4, dtype=torch.float64)
    d2 = kernels.squared_distances(x, y)
    assert torch.allclose(d2, torch.cdist(x, y) ** 2, atol=1e-10)
    assert (kernels.squared_distances(x, x) >= 0).all()


def test_median_heuristic_on_a_known_configuration():
    x = torch.tensor([[0.0], [1.0], [3.0]], dtype=torch.float64)  # distances 1, 2, 3
    assert kernels.median_heuristic(x) == pytest.approx(2.0)
    assert kernels.median_heuristic(torch.zeros(5, 2)) == 1.0


@pytest.mark.parametrize("kernel", [kernels.GaussianKernel(), kernels.MaternKernel(0.5), kernels.MaternKernel(1.5), kernels.MaternKernel(2.5)])
def test_random_fourier_features_approximate_the_kernel(kernel):
    torch.manual_seed(0)
    x = torch.randn(40, 3, dtype=torch.float64)
    rff = kernels.RandomFourierFeatures(kernel, 3, 20000).set_bandwidth(1.7)
    approx = rff(x) @ rff(x).T
    exact = kernel(x, x, 1.7)
    assert (approx - exact).abs().max() < 0.05


def test_matern_matches_its_closed_form_and_has_finite_gradient_at_zero():
    r = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    k = kernels.MaternKernel(2.5).from_squared_distances(r**2, 1.0)
    s = math.sqrt(5) * r
    assert torch.allclose(k, (1 + s + s * s / 3) * torch.exp(-s))
    x = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    kernels.MaternKernel(2.5)(x, x.detach(), 1.0).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_nystrom_features_reproduce_the_kernel_on_inducing_points():
    x = torch.randn(20, 2, dtype=torch.float64)
    features = kernels.NystromFeatures(kernels.GaussianKernel(), x, 1.0)
    assert torch.allclose(features(x) @ features(x).T, kernels.GaussianKernel()(x, x, 1.0), atol=1e-6)


def test_unknown_kernel_name_lists_valid_ones():
    with pytest.raises(ValueError, match="gaussian"):
        kernels.make_kernel("rbf2")
