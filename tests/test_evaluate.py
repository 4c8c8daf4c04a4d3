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


@pytest.fixture
def small_factor_model():
    torch.manual_seed(0)
    model = LinearGaussian(4, 2, sigma=0.4)
    with torch.no_grad():
        x = model.sample(20)[1]
    return model, x


def test_importance_sampling_matches_the_exact_marginal_likelihood(small_factor_model):
    # Measured over seeds 100-104 (K=5000, these 20 points): |estimate - exact| <= 0.034 nats.
    model, x = small_factor_model
    torch.manual_seed(100)
    estimate = evaluate.importance_log_likelihood(model, x, n_samples=5000)
    exact = float(model.log_marginal(x).detach().mean())
    assert abs(estimate.mean - exact) < 0.1
    assert estimate.se > 0 and estimate.per_point.shape == (20,) and (estimate.ess >= 1).all()
    per_point = model.log_marginal(x).detach()
    assert torch.allclose(estimate.per_point, per_point, atol=0.3)


def test_importance_sampling_with_the_exact_posterior_as_proposal_has_zero_variance(small_factor_model):
    # With q(z|x) = p(z|x) every weight equals p(x): the estimate is exact with one sample.
    model, x = small_factor_model
    w, b, s2 = model.weight.detach(), model.bias.detach(), model.log_sigma.detach().exp() ** 2

    def posterior(xb):
        precision = torch.eye(2) + w.T @ (w / s2[:, None])
        cov = torch.linalg.inv(precision)
        mean = (cov @ (w.T @ ((xb[0] - b) / s2)))
        return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)

    estimate = evaluate.importance_log_likelihood(model, x, n_samples=3, proposal=posterior)
    assert torch.allclose(estimate.per_point, model.log_marginal(x).detach(), atol=1e-4)
    assert float(estimate.mc_se.max()) < 1e-3


def test_annealed_importance_sampling_matches_the_exact_marginal_likelihood(small_factor_model):
    # Measured over seeds 0-4 (100 chains, 200 temperatures, these 5 points): |diff| <= 0.023.
    model, x = small_factor_model
    estimate = evaluate.ais_log_likelihood(model, x[:5], n_chains=100, n_temperatures=200, seed=0)
    assert abs(estimate.mean - float(model.log_marginal(x[:5]).detach().mean())) < 0.07


def test_amari_distance_is_zero_for_permuted_rescaled_copies_and_positive_otherwise():
    torch.manual_seed(0)
    w = torch.randn(6, 4)
    perm_scale = torch.eye(4)[[2, 0, 3, 1]] * torch.tensor([2.0, -0.5, 3.0, 0.1])
    assert evaluate.amari_distance(w @ perm_scale, w) < 1e-6
    assert evaluate.amari_distance(torch.randn(6, 4), w) > 0.1
    assert 0 <= evaluate.amari_distance(torch.randn(6, 4), w) <= 1


def test_mmd_is_about_zero_for_one_distribution_and_grows_with_a_shift():
    torch.manual_seed(0)
    a, b = torch.randn(400, 3), torch.randn(400, 3)
    assert evaluate.mmd(a, a, unbiased=False) == pytest.approx(0.0, abs=1e-12)
    same = evaluate.mmd(a, b)
    assert abs(same) < 0.01
    assert evaluate.mmd(a, b + 0.5) > 10 * max(abs(same), 1e-3)
    assert evaluate.mmd(a, b + 1.0) > evaluate.mmd(a, b + 0.5)


def test_score_bias_is_near_zero_for_alws_at_the_truth_and_large_for_a_kernel_that_cannot_see_x():
    from alws.seeding import seeded

    with seeded(0):
        model = LinearGaussian(3, 1, sigma=0.5, shared_noise=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with seeded(1):
        fair = evaluate.score_bias(model, n_data=50, datasets=10, n_sleep=300)
    assert abs(fair.worst()[1]) < 4.0, fair.z
    # weights that ignore x average |x* - mean(z)|^2 over independent z and x*: too large a
    # residual, so the gradient pushes the noise up at the truth
    with seeded(1), pytest.warns(RuntimeWarning, match="same weight"):
        blind = evaluate.score_bias(model, n_data=50, datasets=10, repeats=1, n_sleep=300, bandwidth=1e6, ridge=1e-3,
                                    exponential_family=True)
    assert blind.worst()[0] == "log_sigma" and blind.z["log_sigma"].item() > 10
    assert blind.mean["log_sigma"].shape == model.log_sigma.shape
    rows = blind.rows()
    assert len(rows) == sum(p.numel() for p in model.parameters()) and {"parameter", "index", "mean", "standard_error", "z"} <= set(rows[0])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is left as it was


def test_score_bias_refuses_bad_settings():
    from alws.learner import ALWS

    model = LinearGaussian(2, 1)
    with pytest.raises(ValueError, match="datasets must be an integer >= 2"):
        evaluate.score_bias(model, n_data=10, datasets=1)
    with pytest.raises(ValueError, match="warm"):
        evaluate.score_bias(model, n_data=10, warm=-1)
    with pytest.raises(TypeError, match="not both"):
        evaluate.score_bias(model, n_data=10, learner=ALWS(model, n_sleep=50), n_sleep=50)
    with pytest.raises(ValueError, match="another model"):
        evaluate.score_bias(model, n_data=10, learner=ALWS(LinearGaussian(2, 1), n_sleep=50))
