import math

import pytest
import torch

import alws
from alws.errors import ConfigError
from alws.evaluate import mmd
from alws.experiments import gabor_ring as gr


def test_orientation_estimator_recovers_known_orientations():
    theta = torch.tensor([0.0, 0.1, 0.5, 1.0, math.pi / 2, 2.0, 2.9, math.pi - 0.02])
    estimate = gr.orientation(gr.gabor_filters(theta))
    # angular difference modulo pi (0.02 and pi - 0.02 are 0.04 apart, not pi - 0.04)
    diff = torch.remainder(estimate - theta + math.pi / 2, math.pi) - math.pi / 2
    assert diff.abs().max() < math.radians(1.0)


def test_orientation_estimator_ignores_the_envelope_shape_and_image_size():
    theta = torch.tensor([0.3, 1.2, 2.5])
    for size, aspect in ((8, 0.5), (24, 1.0)):
        estimate = gr.orientation(gr.gabor_filters(theta, size=size, aspect=aspect))
        diff = torch.remainder(estimate - theta + math.pi / 2, math.pi) - math.pi / 2
        assert diff.abs().max() < math.radians(3.0)


def test_filters_are_periodic_in_orientation_with_period_pi():
    theta = torch.tensor([0.4, 1.7])
    assert torch.allclose(gr.gabor_filters(theta), gr.gabor_filters(theta + math.pi), atol=1e-6)
    assert not torch.allclose(gr.gabor_filters(theta), gr.gabor_filters(theta + math.pi / 2), atol=1e-2)


def test_uniformity_metrics_separate_uniform_from_concentrated_orientations():
    uniform = gr.orientation_uniformity(torch.linspace(0, math.pi, 501)[:-1])
    assert uniform["circular_variance"] > 0.99 and uniform["ks_distance"] < 0.01
    concentrated = gr.orientation_uniformity(torch.full((500,), 0.7) + 0.01 * torch.randn(500))
    assert concentrated["circular_variance"] < 0.01 and concentrated["ks_distance"] > 0.7


def test_mmd_is_zero_for_identical_sets_and_small_between_two_draws_of_the_data():
    torch.manual_seed(0)
    a = gr.gabor_filters(torch.rand(300) * math.pi)
    b = gr.gabor_filters(torch.rand(300) * math.pi)
    one_orientation = gr.gabor_filters(torch.full((300,), 1.0))
    assert mmd(a, a, unbiased=False) == pytest.approx(0.0, abs=1e-10)
    assert abs(mmd(a, b)) < 0.1 * mmd(a, one_orientation)


def test_ring_model_samples_on_the_circle_and_follows_the_protocol():
    torch.manual_seed(0)
    model = gr.RingGenerator(size=8, hidden=16)
    z, x = model.sample(50)
    assert torch.allclose(z.norm(dim=1), torch.ones(50), atol=1e-6)
    assert x.shape == (50, 8, 8)
    alws.check_model(model)
    assert torch.allclose(model.log_prior(z), torch.full((50,), -math.log(2 * math.pi)))
    gaussian = gr.RingGenerator(size=8, hidden=16, latent="gaussian")
    alws.check_model(gaussian)


def test_smoke_preset_writes_results_and_figures_and_alws_moves_toward_the_data(tmp_path):
    from alws.experiments.base import run_experiment

    results, out = run_experiment("gabor-ring", "smoke", out_dir=tmp_path / "run", progress=False)
    for name in ("results.json", "filters.png", "orientations.png"):
        assert (out / name).exists(), name
    assert set(results["methods"]) == {"alws", "vae"}
    # Measured on the smoke preset (seed 0): MMD 1.12 at the start, 0.107 after 60 ALWS steps.
    assert results["methods"]["alws"]["mmd"] < 0.5 * results["initial_ring"]["mmd"]
    assert results["data"]["orientation_estimator_error_deg"] < 1.0


@pytest.mark.parametrize("override, message", [
    ("size=2", "size must be >= 4"), ("width=-1", "width must be > 0"), ("n_sleep=1", "n_sleep"), ("colour=1", "valid keys"),
])
def test_config_errors(override, message):
    from alws.experiments.base import load_experiment, resolve_config

    with pytest.raises(ConfigError, match=message):
        resolve_config(load_experiment("gabor-ring"), overrides=[override])
