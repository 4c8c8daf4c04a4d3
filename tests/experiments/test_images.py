import json

import pytest
import torch

import alws
from alws.errors import ConfigError
from alws.models import ImageModel


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
@pytest.mark.parametrize("generator", ["mlp", "dcgan"])
def test_image_model_follows_the_protocol_with_both_likelihoods_and_generators(likelihood, generator):
    torch.manual_seed(0)
    model = ImageModel((1, 8, 8), latent_dim=3, likelihood=likelihood, generator=generator, hidden=16)
    z, x = model.sample(5)
    assert z.shape == (5, 3) and x.shape == (5, 1, 8, 8)
    if likelihood == "bernoulli":
        assert set(x.unique().tolist()) <= {0.0, 1.0}
    alws.check_model(model)  # includes the fast-path hooks against log_joint
    assert model.rsample(4).requires_grad


@pytest.mark.parametrize("generator", ["mlp", "dcgan"])
def test_init_scale_widens_how_much_the_image_depends_on_z(generator):
    def spread(scale):
        torch.manual_seed(0)
        model = ImageModel((1, 8, 8), latent_dim=3, likelihood="bernoulli", generator=generator, hidden=16, init_scale=scale)
        with torch.no_grad():
            return model.generator(torch.randn(200, 3)).std(0).mean()

    assert spread(10.0) > 5 * spread(1.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="init_scale"):
            ImageModel((1, 8, 8), init_scale=bad)


@pytest.mark.parametrize("generator", ["mlp", "dcgan"])
def test_a_bounded_gaussian_mean_stays_in_its_range_and_keeps_the_fast_path(generator):
    torch.manual_seed(0)
    model = ImageModel((1, 8, 8), latent_dim=3, likelihood="gaussian", generator=generator, hidden=16, init_scale=50.0,
                       mean_range=(0.0, 1.0))
    with torch.no_grad():
        means = model.mean_image(torch.randn(300, 3))
    assert 0.0 <= float(means.min()) and float(means.max()) <= 1.0
    assert float(means.min()) < 0.05 and float(means.max()) > 0.95  # a wide generator reaches both ends
    unbounded = ImageModel((1, 8, 8), latent_dim=3, likelihood="gaussian", generator=generator, hidden=16, init_scale=50.0)
    unbounded.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert float(unbounded.mean_image(torch.randn(300, 3)).abs().max()) > 1.5
    alws.check_model(model)  # the natural parameters still match log_joint
    for bad in ((1.0, 0.0), (0.0, float("inf"))):
        with pytest.raises(ValueError, match="mean_range"):
            ImageModel((1, 8, 8), likelihood="gaussian", mean_range=bad)
    with pytest.raises(ValueError, match="mean_range"):
        ImageModel((1, 8, 8), likelihood="bernoulli", mean_range=(0.0, 1.0))


def test_the_experiment_bounds_the_mean_to_the_pixels_range():
    from alws.experiments.images import mean_range

    unit = torch.rand(10, 1, 4, 4)
    assert mean_range("auto", unit, "gaussian") == (0.0, 1.0)
    assert mean_range("auto", unit * 4 - 2, "gaussian") is None  # whitened patches: unbounded
    assert mean_range("bounded", unit * 4 - 2, "gaussian") == (float((unit * 4 - 2).min()), float((unit * 4 - 2).max()))
    assert mean_range("unbounded", unit, "gaussian") is None
    assert mean_range("auto", unit.round(), "bernoulli") is None
    with pytest.raises(ConfigError, match="no range"):
        mean_range("bounded", torch.zeros(3, 1, 2, 2), "gaussian")


def test_the_kernel_objective_follows_the_likelihood_unless_set():
    from alws.learner import ALWS

    torch.manual_seed(0)
    for likelihood, objective in (("gaussian", "log-likelihood"), ("bernoulli", "targets")):
        model = ImageModel((1, 8, 8), latent_dim=3, likelihood=likelihood, hidden=16)
        assert ALWS(model, n_sleep=50).kernel_objective == objective
        assert ALWS(model, n_sleep=50, kernel_objective="directional").kernel_objective == "directional"


def test_binary_images_take_the_binary_selection_unless_it_is_set():
    from alws.experiments.images import Config, alws_fit_options
    from alws.learner import ALWS

    binary = alws_fit_options(Config(n_sleep=700), "bernoulli")
    assert (binary["weights"], binary["bandwidth_grid"], binary["ridge_grid"]) == ("bounded", (1.0,), (1e-3,))
    gaussian = alws_fit_options(Config(n_sleep=700), "gaussian")
    assert not {"bandwidth_grid", "ridge_grid", "weights"} & set(gaussian)  # the library's selection and weights
    explicit = alws_fit_options(Config(bandwidth_grid=[0.5, 1.0], ridge_grid=[0.01], weights="krr", regression="rff"), "bernoulli")
    assert (explicit["bandwidth_grid"], explicit["ridge_grid"], explicit["weights"]) == ((0.5, 1.0), (0.01,), "krr")
    # the regression: the library's "auto" (exact up to 4096 sleep samples) for every image, unless set
    assert (binary["regression"], gaussian["regression"], explicit["regression"]) == ("auto", "auto", "rff")
    # a run that recorded regression=None (before that default) resumes with what it had: random features for Gaussian images
    from alws.experiments.base import config_of_run, load_experiment

    recorded = config_of_run(load_experiment("images"), {"dataset": "mnist", "regression": None}, "config.json")
    assert [alws_fit_options(recorded, likelihood)["regression"] for likelihood in ("bernoulli", "gaussian")] == ["auto", "rff"]
    assert ALWS(ImageModel((1, 8, 8), latent_dim=3, likelihood="gaussian", hidden=16), n_sleep=700, regression="auto").backend == "exact"
    assert ALWS(ImageModel((1, 8, 8), latent_dim=3, likelihood="bernoulli", hidden=16), n_sleep=700, regression="auto").backend == "exact"
    assert ALWS(ImageModel((1, 8, 8), latent_dim=3, likelihood="bernoulli", hidden=16), n_sleep=5000, regression="auto").backend == "rff"
    model = ImageModel((1, 8, 8), latent_dim=3, likelihood="bernoulli", hidden=16)
    learner = ALWS(model, **{k: v for k, v in binary.items() if k in ("n_sleep", "bandwidth_grid", "ridge_grid", "weights")})
    assert (learner.bandwidth_grid, learner.ridge_grid, learner.weight_mode) == ((1.0,), (1e-3,), "bounded")


def test_smoke_runs_of_alws_and_a_baseline_write_the_table_and_the_grid(tmp_path):
    from alws.experiments.base import run_experiment

    results, out = run_experiment("images", "smoke", out_dir=tmp_path / "run", progress=False,
                                  overrides=[f"cache_dir={json.dumps(str(tmp_path / 'cache'))}"])
    for name in ("results.json", "table.md", "samples.png"):
        assert (out / name).exists(), name
    table = (out / "table.md").read_text()
    for method in ("alws-projection", "alws-learned", "vae", "data (train images)"):
        assert f"| {method} |" in table
    for row in results["methods"].values():
        assert row["steps"] >= 1 and row["fid"] > results["data_reference"]["fid"]


@pytest.mark.parametrize("override, message", [
    ('dataset="svhn"', "unknown dataset 'svhn'; valid: binarised-mnist"), ("seconds_per_method=0", "budget"),
    ("steps=0", "steps must be >= 1"), ('methods=["gan"]', "unknown method"),
])
def test_config_errors(override, message):
    from alws.experiments.base import load_experiment, resolve_config

    with pytest.raises(ConfigError, match=message):
        resolve_config(load_experiment("images"), overrides=[override])


def test_benchmark_refuses_a_non_positive_budget_and_splits_it_evenly():
    from alws.experiments.base import load_experiment, resolve_config

    module = load_experiment("images-benchmark")
    with pytest.raises(ConfigError, match="budget_minutes must be > 0"):
        resolve_config(module, overrides=["budget_minutes=0"])
    config = resolve_config(module, overrides=["budget_minutes=24", "training_fraction=1.0"])
    assert config.seconds_per_method() == pytest.approx(24 * 60 / (3 * 8))


def test_benchmark_smoke_writes_per_dataset_and_combined_tables_and_resumes_from_stages(tmp_path):
    from alws.experiments.base import resume_experiment, run_experiment

    module_overrides = json.dumps({"seconds_per_method": 1.0, "n_train": 500, "n_test": 100, "n_sleep": 300, "n_features": 100,
                                   "n_eval": 100, "feature_epochs": 1, "feature_train_max": 300, "hidden": 32,
                                   "cache_dir": str(tmp_path / "cache")})
    results, out = run_experiment("images-benchmark", "smoke", out_dir=tmp_path / "run", progress=False,
                                  overrides=[f"overrides={module_overrides}", "budget_minutes=0.05"])
    for name in ("table.md", "results.json", "binarised-mnist/table.md", "binarised-mnist/samples.png"):
        assert (out / name).exists(), name
    assert "| alws-projection |" in (out / "table.md").read_text()
    again, _ = resume_experiment(out, progress=False)
    assert again["datasets"] == results["datasets"]  # reused from the stage, not retrained


def test_a_run_started_before_the_bounded_mean_resumes_with_the_model_it_had():
    from alws.experiments.base import config_of_run, load_experiment

    module = load_experiment("images")
    older = config_of_run(module, {"dataset": "mnist", "seed": 3}, "config.json")
    assert (older.gaussian_mean, older.kernel_objective, older.select_directions, older.seed) == ("unbounded", "targets", 2, 3)
    # before the bound and the binary selection: kernel ridge weights and the library's selection
    from alws.experiments.images import alws_fit_options
    from alws.learner import DEFAULT_BANDWIDTH_GRID, DEFAULT_RIDGE_GRID

    options = alws_fit_options(older, "bernoulli")
    assert (options["weights"], options["bandwidth_grid"], options["ridge_grid"]) == ("krr", DEFAULT_BANDWIDTH_GRID, DEFAULT_RIDGE_GRID)
    assert options["regression"] == "rff"  # and random features, as every image run had before binary images took "auto"
    recorded = config_of_run(module, {"dataset": "mnist", "gaussian_mean": "auto", "kernel_objective": "auto", "select_directions": 8},
                             "config.json")
    assert (recorded.gaussian_mean, recorded.kernel_objective, recorded.select_directions) == ("auto", "auto", 8)
    with pytest.raises(ConfigError, match="gaussian_mean"):
        config_of_run(module, {"gaussian_mean": "clipped"}, "config.json")
