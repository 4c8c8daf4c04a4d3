import pytest
import torch

import alws
from alws.experiments.ica import NoisyICA
from alws.learner import ALWS
from alws.models import LinearGaussian


def test_stein_statistic_has_mean_zero_over_the_joint():
    torch.manual_seed(0)
    model = LinearGaussian(5, 2, sigma=0.3)
    learner = ALWS(model, n_sleep=50, stein=True)
    z, x = model.sample(20000)
    s = learner.stein.statistic(z, x)  # [n, 4]
    mean, se = s.mean(0), s.std(0) / 20000**0.5
    assert (mean.abs() < 4 * se).all()
    assert (s.std(0) > 0.1).all()  # not trivially zero


def test_stein_coefficients_are_exactly_the_pseudo_inverse_map_for_noisy_ica():
    torch.manual_seed(0)
    model = NoisyICA(16, 3, sigma=0.1, seed=0)
    learner = ALWS(model, n_sleep=200, stein=["W"])
    z, x = model.sample(200)
    learner.stein.fit(z)
    W = model.W.detach().double()
    pinv_t = W @ torch.linalg.inv(W.T @ W)
    s = learner.stein.statistic(z[:10], x[:10])
    for row in s:
        expected = (pinv_t @ row.reshape(3, 3)).reshape(-1)
        assert torch.allclose(learner.stein.coefficients @ row, expected, rtol=1e-5, atol=1e-4)


def test_the_corrected_ica_gradient_keeps_the_span_part_of_order_one():
    """With the correction, the part of the W-gradient in the span of W is W^+T (E_a[sign(z) z^T] - I)."""
    torch.manual_seed(1)
    model = NoisyICA(16, 2, sigma=0.05, seed=1)
    with torch.no_grad():
        _, data = model.sample(100)
    learner = ALWS(model, n_sleep=300, regression="exact", weights="nonnegative", stein=["W"])
    torch.manual_seed(2)
    loss, _ = learner.loss(data)
    model.zero_grad()
    loss.backward()
    W = model.W.detach()
    span = torch.linalg.pinv(W) @ (-model.W.grad)  # W^+ G: [K, K]
    assert span.abs().max() < 5  # of order one; without the correction it carries 1 / sigma^2 = 400 times the weights' misfit
    plain = ALWS(model, n_sleep=300, regression="exact", weights="nonnegative")
    torch.manual_seed(2)
    loss, _ = plain.loss(data)
    model.zero_grad()
    loss.backward()
    assert (torch.linalg.pinv(W) @ (-model.W.grad)).abs().max() > 5 * span.abs().max()


def test_stein_gradient_matches_the_exact_gradient_of_a_linear_gaussian_model():
    torch.manual_seed(0)
    truth = LinearGaussian(16, 2, sigma=0.1)
    with torch.no_grad():
        _, data = truth.sample(300)
    model = LinearGaussian(16, 2, sigma=0.15)
    with torch.no_grad():
        model.weight.copy_(truth.weight + 0.2 * torch.randn_like(truth.weight))
        model.bias.copy_(truth.bias)
    names = [k for k, _ in model.named_parameters()]
    exact = dict(zip(names, torch.autograd.grad(model.log_marginal(data).mean(), list(model.parameters()))))
    estimate = alws.gradient(model, data, n_sleep=1000, regression="exact", stein=True, seed=0)
    assert alws.evaluate.relative_error(estimate, exact) < 0.15
    per_point = alws.gradient(model, data[:5], n_sleep=500, regression="exact", stein=True, seed=0, reduce="none")
    mean = alws.gradient(model, data[:5], n_sleep=500, regression="exact", stein=True, seed=0)
    for name in names:
        assert torch.allclose(per_point[name].mean(0), mean[name], rtol=1e-4, atol=1e-5)


class Discrete(alws.LatentVariableModel):
    def __init__(self):
        super().__init__()
        self.mu = torch.nn.Parameter(torch.zeros(2))

    def sample(self, n):
        z = torch.randint(0, 2, (n,))
        return z, self.likelihood(z).sample()

    def log_prior(self, z):
        return torch.full(z.shape, -0.6931)

    def likelihood(self, z):
        return torch.distributions.Independent(torch.distributions.Normal(self.mu[z][:, None].expand(-1, 3), 1.0), 1)


@pytest.mark.parametrize("setting, message", [
    ("discrete", "one continuous latent tensor"), ("no-hooks", "exponential-family hooks"), ("unknown", "does not have"),
    ("bad", "True, False or a list"),
])
def test_stein_refuses_what_it_cannot_use(setting, message):
    model = {"discrete": Discrete(), "no-hooks": LinearGaussian(3, 1), "unknown": LinearGaussian(3, 1),
             "bad": LinearGaussian(3, 1)}[setting]
    options = {"discrete": dict(stein=True), "no-hooks": dict(stein=True, exponential_family=False),
               "unknown": dict(stein=["nope"]), "bad": dict(stein="yes")}[setting]
    with pytest.raises(alws.ConfigError, match=message):
        ALWS(model, n_sleep=20, **options)
