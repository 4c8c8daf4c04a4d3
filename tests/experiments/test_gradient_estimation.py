import json

import numpy as np
import torch

import alws
from alws import evaluate
from alws.experiments import gradient_estimation as exp1
from alws.experiments.base import run_experiment


def test_quadrature_reference_agrees_with_a_one_dimensional_integral():
    # log p(x) depends on b only through u = b.z ~ N(0, |b|^2): a 1-D integral on a fine grid
    # is an independent check of the 2-D Gauss-Hermite reference and its gradient.
    model = exp1.SoftplusRegression((1.0, 0.5), 0.3)
    x = torch.tensor([[-0.8], [0.1], [1.5]], dtype=torch.float64)

    def log_marginal_1d(b):
        scale = torch.linalg.norm(b)
        u = torch.linspace(-12, 12, 40001, dtype=torch.float64)[None, :] * scale
        log_pu = torch.distributions.Normal(0, scale).log_prob(u)
        mean = torch.nn.functional.softplus(u) - b @ b
        log_lik = torch.distributions.Normal(mean, 0.3).log_prob(x)
        du = u[0, 1] - u[0, 0]
        return torch.logsumexp(log_pu + log_lik, 1) + torch.log(du)

    b = model.b.detach().clone().requires_grad_(True)
    reference = log_marginal_1d(b)
    quad = evaluate.quadrature_log_marginal(model, x, dim=2, n_nodes=150)
    assert torch.allclose(quad, reference, atol=1e-7)
    g_ref = torch.autograd.grad(reference.sum(), b)[0]
    g_quad = evaluate.exact_gradient(model, x, dim=2, n_nodes=150, reduce="none")["b"].sum(0)
    assert torch.allclose(g_quad, g_ref, atol=1e-6)


def softplus_problem(n_points):
    """Experiment I's model at b=(1, 0.5), sigma_x=1, ``n_points`` data points and their exact
    per-point gradients (100 Gauss-Hermite nodes)."""
    torch.manual_seed(0)
    model = exp1.SoftplusRegression((1.0, 0.5), 1.0)
    with torch.no_grad():
        x = model.sample(n_points)[1]
    return model, x, evaluate.exact_gradient(model, x, dim=2, n_nodes=100, reduce="none")


def test_exact_krr_gradient_at_2000_sleep_samples_agrees_with_quadrature():
    # Measured over seeds 0-19 at b=(1, 0.5), sigma_x=1, 50 points, N=2000 (exact KRR, automatic
    # path): relative error median 0.033, min 0.015, max 0.075. Tolerance: 0.12.
    model, x, exact = softplus_problem(50)
    estimate = alws.gradient(model, x, n_sleep=2000, regression="exact", reduce="none", seed=7)
    assert evaluate.relative_error(estimate, exact, batched=True) < 0.12


def test_smoke_preset_writes_results_and_figure(tmp_path):
    results, out = run_experiment("gradient-estimation", "smoke", out_dir=tmp_path / "run", progress=False)
    for name in ("config.json", "results.json", "gradient_error.png", "run.log"):
        assert (out / name).exists(), name
    saved = json.loads((out / "results.json").read_text())
    setting = saved["settings"][0]
    config = exp1.Config()
    assert set(setting["estimators"]) == set(config.estimators) | set(config.baselines)
    for est in setting["estimators"].values():
        errors = np.array(est["relative_error"]["all"])
        assert errors.shape == (2, 2) and np.isfinite(errors).all()
    for name in config.baselines:
        training = setting["estimators"][name]["encoder_training"]
        assert training["steps"] >= 1 and training["seconds"] <= training["budget_seconds"] + 1.0
    assert saved["table"] and "alws-exact" in exp1.report(saved)


def test_importance_weighted_baseline_gradient_converges_to_the_exact_one():
    # Self-normalised importance sampling is consistent whatever the encoder (here untrained).
    # Measured (seeds 0-2, 20 points): relative error 0.23-0.28 at 10 particles, 0.016-0.023 at
    # 1000, 0.0046-0.0053 at 20000.
    from alws import baselines

    model, x, exact = softplus_problem(20)
    encoder = baselines.make_encoder(model, x).double()
    torch.manual_seed(0)
    few = evaluate.relative_error(exp1.baseline_gradients(model, encoder, x, 10, True), exact, batched=True)
    many = evaluate.relative_error(exp1.baseline_gradients(model, encoder, x, 20000, True), exact, batched=True)
    assert many < 0.02 and many < few / 5
