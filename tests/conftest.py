import pytest
import torch

from alws.models import LinearGaussian


@pytest.fixture
def linear_gaussian_data():
    """A 3-D factor-analysis model with 1 latent, its data (400 points) and a fresh model to fit."""
    torch.manual_seed(0)
    truth = LinearGaussian(3, 1, sigma=0.5)
    with torch.no_grad():
        _, data = truth.sample(400)
    torch.manual_seed(1)
    return truth, data, LinearGaussian(3, 1, sigma=1.0)


def exact_mean_gradient(model, x):
    """Gradient of the exact mean log marginal of a LinearGaussian model."""
    names = [k for k, _ in model.named_parameters()]
    grads = torch.autograd.grad(model.log_marginal(x).mean(), list(model.parameters()))
    return dict(zip(names, grads))
