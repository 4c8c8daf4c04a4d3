import math

import numpy as np
import pytest
import torch

import alws
from alws.errors import ConfigError
from alws.evaluate import amari_distance
from alws.experiments import ica


def test_match_columns_undoes_a_permutation_and_sign_flips():
    torch.manual_seed(0)
    W = torch.randn(20, 5)
    W = W / W.norm(dim=0)
    shuffled = -3.0 * W[:, [2, 0, 4, 1, 3]]
    shuffled[:, 1] *= -1
    matched, cosines = ica.match_columns(shuffled, W)
    assert torch.allclose(matched, W, atol=1e-6)
    assert torch.allclose(cosines, torch.ones(5, dtype=cosines.dtype), atol=1e-6)
    assert amari_distance(shuffled, W) == pytest.approx(0.0, abs=1e-6)


def test_natural_patches_are_standardised_crops_of_the_packaged_images():
    patches = ica.natural_patches(8, 500, seed=0)
    assert patches.shape == (500, 64)
    assert patches.mean(1).abs().max() < 1e-5
    assert float(patches.std()) == pytest.approx(1.0, abs=1e-3)
    assert torch.equal(patches, ica.natural_patches(8, 500, seed=0))


def test_patch_larger_than_the_images_is_refused():
    with pytest.raises(ConfigError, match="larger than the smallest image side"):
        ica.natural_patches(10, 5, seed=0, images=[np.zeros((6, 40))])


def test_true_mixing_has_unit_columns_and_recovers_a_known_mixture():
    torch.manual_seed(0)
    A = torch.randn(6, 3)
    A = A / A.norm(dim=0)
    s = torch.distributions.Laplace(0.0, 1.0).sample((20000, 3))
    W = ica.true_mixing(s @ A.T, 3, seed=0)
    assert torch.allclose(W.norm(dim=0), torch.ones(3), atol=1e-5)
    assert amari_distance(W, A) < 0.05


def test_model_log_joint_matches_the_formula_and_the_protocol():
    model = ica.NoisyICA(4, 2, sigma=0.5)
    z = torch.tensor([[0.3, -1.2]])
    x = torch.tensor([[0.1, 0.2, -0.3, 0.4]])
    mean = z @ model.W.detach().T
    expected = -z.abs().sum() - 2 * math.log(2) - ((x - mean) ** 2).sum() / (2 * 0.25) - 4 * math.log(0.5 * math.sqrt(2 * math.pi))
    assert float(model.log_joint(z, x).detach()) == pytest.approx(float(expected), rel=1e-5)
    alws.check_model(model)


def test_smoke_preset_learns_the_noise_and_records_the_amari_curve(tmp_path):
    from alws.experiments.base import run_experiment

    results, out = run_experiment("ica", "smoke", out_dir=tmp_path / "run", progress=False, overrides=['features="auto"'])
    for name in ("results.json", "amari.png", "filters.png"):
        assert (out / name).exists(), name
    row = results["methods"]["alws"]
    # Measured on the smoke preset, seeds 0-5: sigma 1.0 -> 0.23-0.26 (truth 0.1) with the learned
    # kernel. Its Amari distance after 150 steps scatters from 0.10 to 0.76 over those seeds (mean
    # 0.35; the fixed kernel with kernel ridge weights 0.02-0.73, mean 0.38): too noisy to assert.
    assert row["final_sigma"] < 0.4
    assert row["curve"][0]["amari"] == row["initial_amari"]
    assert results["methods"]["laplace-vae"]["final_amari"] < 0.1


def test_the_default_fixed_kernel_lowers_the_amari_distance(tmp_path):
    from alws.experiments.base import run_experiment

    results, _ = run_experiment("ica", "smoke", out_dir=tmp_path / "run", progress=False,
                                overrides=["baseline=false", "n_sleep=1000", "steps=300"])
    row = results["methods"]["alws"]
    # The defaults (kernel ridge weights, the Stein control variate on W) need N = 1000: with the
    # smoke preset's N = 500 the control variate is slower (0.415 -> 0.42 in 450 steps). Measured
    # with N = 1000, 300 steps: 0.415 -> 0.170 (seed 0), 0.273 -> 0.140 (seed 1).
    assert row["final_amari"] < 0.6 * row["initial_amari"]
    assert 0.05 < row["final_sigma"] < 0.2  # truth 0.1: no collapse, no threefold overestimate


@pytest.mark.parametrize("override, message", [
    ("noise=-0.1", "noise must be >= 0"), ("n_sources=300", "cannot exceed"), ("patch=0", "patch must be >= 1"),
    ("n_source=3", "valid keys: .*n_sources"), ('stein="W"', "stein must be True, False or a list"),
])
def test_config_errors(override, message):
    from alws.experiments.base import load_experiment, resolve_config

    with pytest.raises(ConfigError, match=message):
        resolve_config(load_experiment("ica"), overrides=[override])


def test_unparseable_set_string_is_refused():
    from alws.experiments.base import load_experiment, resolve_config

    with pytest.raises(ConfigError, match="does not parse"):
        resolve_config(load_experiment("ica"), overrides=["lr=[0.1"])
