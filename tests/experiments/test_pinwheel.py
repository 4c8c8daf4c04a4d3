import math

import pytest
import torch
from torch import distributions as D
from torch import nn

import alws
from alws.errors import ConfigError
from alws.experiments import pinwheel as pw


def test_pinwheel_data_is_centred_with_the_requested_arms():
    x, arm = pw.pinwheel(arms=5, per_arm=200, seed=3)
    assert x.shape == (1000, 2) and torch.bincount(arm).tolist() == [200] * 5
    assert x.mean(0).abs().max() < 1e-5
    # each arm's points sit at radius about 1 (radial sd 0.3) around the centre of the raw data
    again, _ = pw.pinwheel(arms=5, per_arm=200, seed=3)
    assert torch.equal(x, again)


def test_model_follows_the_protocol_with_a_discrete_and_a_continuous_latent():
    torch.manual_seed(0)
    model = pw.PinwheelMixture(K=4)
    (z1, z2), x = model.sample(30)
    assert z1.dtype == torch.long and z2.shape == (30, 2) and x.shape == (30, 2)
    alws.check_model(model)  # also checks log_prior + likelihood against log_joint
    L = model.scale_tril()
    assert torch.allclose(L[:, 0, 1], torch.zeros(4))


def test_held_out_log_likelihood_matches_the_exact_mixture_density_for_a_linear_map():
    torch.manual_seed(0)
    model = pw.PinwheelMixture(K=3)
    linear = nn.Linear(2, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 0.3], [-0.2, 0.8]]))
        linear.bias.copy_(torch.tensor([0.1, -0.2]))
        model.alpha.copy_(torch.tensor([0.5, -0.3, 0.0]))
        model.off_diag.copy_(torch.tensor([0.1, -0.2, 0.05]))
    model.net = linear
    x = torch.randn(40, 2)
    estimate = pw.held_out_log_likelihood(model, x, n_samples=20000, seed=1)
    with torch.no_grad():
        A, b = linear.weight, linear.bias
        cov = A @ (model.scale_tril() @ model.scale_tril().transpose(1, 2)) @ A.T + torch.diag(model.log_sigma.exp() ** 2)
        exact = D.MixtureSameFamily(D.Categorical(logits=model.alpha), D.MultivariateNormal(model.mu @ A.T + b, cov)).log_prob(x)
    assert estimate["mean"] == pytest.approx(float(exact.mean()), abs=0.02)
    assert estimate["se"] == pytest.approx(float(exact.std() / math.sqrt(40)), rel=0.05)
    assert sum(estimate["responsibility"]) == pytest.approx(1.0, abs=1e-5)


def test_smoke_preset_writes_results_and_alws_beats_its_starting_point(tmp_path):
    from alws.experiments.base import run_experiment

    results, out = run_experiment("pinwheel", "smoke", out_dir=tmp_path / "run", progress=False)
    for name in ("results.json", "samples.png", "log_likelihood.png"):
        assert (out / name).exists(), name
    assert set(results["methods"]) == {"alws", "sf-vae"}
    alws_ll = results["methods"]["alws"]["test_log_likelihood"]
    # Measured on the smoke preset (seed 0): -2.02 (s.e. 0.05) after 100 steps.
    assert alws_ll["mean"] > results["initial_test_log_likelihood"] + 0.3
    assert 1 <= alws_ll["components_used"] <= 10


@pytest.mark.parametrize("override, message", [
    ("K=0", "K must be >= 1"), ("radial_std=-0.1", "radial_std"), ("test_fraction=1.5", "test_fraction"), ("prior_mu=0", "prior_mu"),
])
def test_config_errors(override, message):
    from alws.experiments.base import load_experiment, resolve_config

    with pytest.raises(ConfigError, match=message):
        resolve_config(load_experiment("pinwheel"), overrides=[override])
