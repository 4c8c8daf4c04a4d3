import math

import pytest
import torch

from alws import evaluate
from alws.models import LinearGaussian


def test_gauss_hermite_grid_integrates_gaussian_moments():
    nodes, logw = evaluate.gauss_hermite_grid(2, 30)
    w = logw.exp()
    assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
    assert float((w * nodes[:, 0] ** 2 * nodes[:, 1] ** 4).sum()) == pytest.approx(3.0, abs=1e-10)  # E z1^2 z2^4
    assert float((w * nodes[:, 0] ** 3).sum()) == pytest.approx(0.0, abs=1e-10)


def test_large_node_counts_stay_finite():
    nodes, logw = evaluate.gauss_hermite_grid(1, 400)
    assert torch.isfinite(nodes).all() and torch.isfinite(logw).all()
    assert float(logw.exp().sum()) == pytest.approx(1.0, abs=1e-12)


def test_quadrature_log_marginal_and_gradient_match_a_linear_gaussian_model():
    torch.manual_seed(0)
    model = LinearGaussian(3, 2, sigma=0.7).double()
    x = model.sample(6)[1]
    exact = model.log_marginal(x)
    quad = evaluate.quadrature_log_marginal(model, x, dim=2, n_nodes=80)
    assert torch.allclose(quad, exact, atol=1e-8)
    names = [k for k, _ in model.named_parameters()]
    reference = dict(zip(names, torch.autograd.grad(exact.mean(), list(model.parameters()))))
    estimate = evaluate.exact_gradient(model, x, dim=2, n_nodes=80)
    assert evaluate.relative_error(estimate, reference) < 1e-5  # measured: 8e-7 at 80 nodes


def test_relative_error_and_cosine():
    ref = {"a": torch.tensor([3.0, 4.0])}
    assert evaluate.relative_error({"a": torch.tensor([3.0, 4.0])}, ref) == 0.0
    assert evaluate.relative_error({"a": torch.tensor([0.0, 0.0])}, ref) == pytest.approx(1.0)
    assert evaluate.cosine_similarity({"a": torch.tensor([-3.0, -4.0])}, ref) == pytest.approx(-1.0)
    assert evaluate.cosine_similarity({"a": torch.tensor([[4.0, -3.0]])}, {"a": ref["a"][None]}, batched=True) == pytest.approx(0.0)
