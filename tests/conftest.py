import pytest
import torch

from alws.models import LinearGaussian


def factor_analysis_problem(x_dim=3, z_dim=1):
    """``(truth, data, model)``: a factor-analysis model (noise 0.5), 400 points from it, and a
    fresh model (noise 1.0) to fit. Seeded, so every caller gets the same problem."""
    torch.manual_seed(0)
    truth = LinearGaussian(x_dim, z_dim, sigma=0.5)
    with torch.no_grad():
        _, data = truth.sample(400)
    torch.manual_seed(1)
    return truth, data, LinearGaussian(x_dim, z_dim, sigma=1.0)


@pytest.fixture
def linear_gaussian_data():
    """3-D observations, 1 latent (see :func:`factor_analysis_problem`)."""
    return factor_analysis_problem()


def exact_mean_gradient(model, x):
    """Gradient of the exact mean log marginal of a LinearGaussian model."""
    names = [k for k, _ in model.named_parameters()]
    grads = torch.autograd.grad(model.log_marginal(x).mean(), list(model.parameters()))
    return dict(zip(names, grads))
