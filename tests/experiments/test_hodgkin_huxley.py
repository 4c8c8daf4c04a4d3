import math

import pytest
import torch

import alws
from alws.errors import ConfigError
from alws.experiments import hodgkin_huxley as hh
from alws.models import hodgkin_huxley as hh_model


def test_true_parameters_spike_during_the_step_current_and_rest_without_it():
    steps = 1000  # 50 ms at dt = 0.05 ms; current on from 5 ms to 45 ms
    torch.manual_seed(0)
    driven = hh.HodgkinHuxley(hh.step_current(steps, 10.0, 0.5)).simulate(3)
    for trace in driven:
        times = hh.spike_times(trace, 0.05)
        assert len(times) >= 5
        assert all(5.0 <= t <= 46.0 for t in times)  # none before the current starts
    resting = hh.HodgkinHuxley(torch.zeros(steps)).simulate(3)
    assert all(hh.spike_times(trace, 0.05) == [] for trace in resting)
    assert resting.max() < -60


@pytest.mark.parametrize("singular_u", [13.0, 15.0, 40.0])
def test_rate_functions_are_finite_and_continuous_at_their_removable_singularities(singular_u):
    v_t = torch.tensor(-60.0, dtype=torch.float64)
    eps = torch.tensor([-1e-3, -1e-7, 0.0, 1e-7, 1e-3], dtype=torch.float64)
    v = (v_t + singular_u + eps).requires_grad_(True)
    values = torch.stack(hh_model.rates(v, v_t))
    assert torch.isfinite(values).all()
    # continuity: the value at the singular point is within O(eps) of its neighbours
    assert (values[:, 2:3] - values).abs().max() < 1e-3
    assert torch.autograd.grad(values.sum(), v)[0].isfinite().all()


def test_x_over_expm1_matches_the_direct_formula_away_from_zero():
    y = torch.tensor([-3.0, -0.5, 0.5, 3.0], dtype=torch.float64)
    assert torch.allclose(hh_model.x_over_expm1(y), y / torch.expm1(y))
    assert float(hh_model.x_over_expm1(torch.tensor(0.0, dtype=torch.float64))) == 1.0


def test_log_joint_follows_the_protocol_and_the_fast_path_hooks_agree():
    model = hh.HodgkinHuxley(hh.step_current(200, 10.0, 0.5), params=hh.WRONG_START)
    info = alws.check_model(model)  # also checks the hooks against log_joint
    assert info.exponential_family and info.x_shape == (200,)
    assert model.values()["g_Na"] == pytest.approx(40.0)


def _two_step_log_marginal_by_quadrature(model, x):
    """``log p(x_1, x_2)`` for one two-step trace ``x [2]``, integrating ``V_1`` on a fine grid:
    ``p = int N(V_1; mu_1, s_p) N(x_1; V_1, s_o) N(x_2; mu_2(V_1), sqrt(s_p^2 + s_o^2)) dV_1``."""
    from torch.distributions import Normal

    s_p, s_o = model.value("sigma_process"), model.value("sigma_obs")
    v0, m, h, g = model._gates0(1)
    dv, m, h, g = model._drift(v0, m, h, g, 0)
    mu_1 = v0 + dv
    grid = torch.linspace(float(mu_1) - 12 * float(s_p), float(mu_1) + 12 * float(s_p), 20001, dtype=torch.float64)
    dv2, *_ = model._drift(grid, m.expand_as(grid), h.expand_as(grid), g.expand_as(grid), 1)
    log_density = (Normal(mu_1, s_p).log_prob(grid) + Normal(grid, s_o).log_prob(x[0])
                   + Normal(grid + dv2, (s_p**2 + s_o**2).sqrt()).log_prob(x[1]))
    return float(torch.logsumexp(log_density, 0) + torch.log(grid[1] - grid[0]))


def test_particle_filter_log_marginal_is_exact_for_one_step_and_matches_quadrature_for_two():
    from torch.distributions import Normal

    with torch.no_grad():
        one = hh.HodgkinHuxley(torch.tensor([10.0]), params={"sigma_process": 2.0, "sigma_obs": 1.5})
        x1 = torch.tensor([[-65.0], [-72.0]], dtype=torch.float64)
        v0, m, h, g = one._gates0(1)
        mean = v0 + one._drift(v0, m, h, g, 0)[0]
        exact = Normal(mean, (2.0**2 + 1.5**2) ** 0.5).log_prob(x1[:, 0])
        assert torch.allclose(one.log_marginal(x1, particles=3), exact, atol=1e-10)

        # two steps at a voltage where the drift is far from linear in V_1 (V_1 near threshold)
        two = hh.HodgkinHuxley(torch.tensor([10.0, 10.0]), params={"sigma_process": 3.0, "sigma_obs": 0.5}, v0=-50.0)
        x2 = torch.tensor([-44.0, -41.0], dtype=torch.float64)
        reference = _two_step_log_marginal_by_quadrature(two, x2)
        estimates = two.log_marginal(x2.expand(200, 2), particles=500, generator=torch.Generator().manual_seed(0))
        # p(x) is estimated without bias: the log of the mean estimate matches, to its Monte Carlo error
        assert float(torch.logsumexp(estimates, 0) - torch.log(torch.tensor(200.0))) == pytest.approx(reference, abs=0.01)


def test_particle_filter_log_marginal_prefers_the_truth_and_refuses_mis_shaped_traces():
    current = hh.step_current(200, 10.0, 0.5)
    truth = hh.HodgkinHuxley(current)
    torch.manual_seed(0)
    _, data = truth.sample(3)
    with torch.no_grad():
        at_truth = truth.log_marginal(data, particles=200, generator=torch.Generator().manual_seed(1))
        moved = hh.HodgkinHuxley(current, params={"g_K": 3.0}).log_marginal(data, particles=200, generator=torch.Generator().manual_seed(1))
    assert at_truth.shape == (3,) and torch.isfinite(at_truth).all()
    assert (at_truth > moved).all()
    with pytest.raises(ValueError, match=r"\[n, 200\]"):
        truth.log_marginal(data[:, :100])
    with pytest.raises(ValueError, match="particles"):
        truth.log_marginal(data, particles=0)


def test_non_positive_time_step_is_refused():
    with pytest.raises(ConfigError, match="dt"):
        hh.HodgkinHuxley(torch.zeros(10), dt=0.0)


def test_smoke_preset_runs_and_lowers_the_observation_noise_toward_the_truth(tmp_path):
    from alws.experiments.base import run_experiment

    results, out = run_experiment("hodgkin-huxley", "smoke", out_dir=tmp_path / "run", progress=False)
    for name in ("results.json", "traces.png", "parameters.png"):
        assert (out / name).exists(), name
    errors = results["relative_error"]
    # sigma_obs starts at 30 (truth 1); the fast path's gradient for it is large and negative.
    assert errors["learned"]["sigma_obs"] < errors["initial"]["sigma_obs"]
    assert results["spikes"]["data"]["spike_count"] > 0
    # the second stage ran on its own checkpoint, after the first, and its steps are in the trajectory
    assert results["stages"] == {"steps": 12, "refine_steps": 4, "refine_with": {**hh.REFINE_WITH, "n_sleep": 60}}
    assert (out / "checkpoints" / "alws.pt").exists() and (out / "checkpoints" / "alws-refine.pt").exists()
    steps = [row["step"] for row in results["parameter_trajectory"]]
    assert steps == sorted(steps) and steps[-1] == 16 and 13 in steps
    assert results["parameter_trajectory"][-1]["sigma_obs"] == pytest.approx(results["learned_parameters"]["sigma_obs"])
    # log p(data) by the particle filter: the data favour the truth over the deliberately wrong start
    ll = results["log_likelihood"]
    assert set(ll) == {"truth", "initial", "learned"} and all(math.isfinite(v) for v in ll.values())
    assert ll["truth"] > max(ll["initial"], ll["learned"])
    # resumed from both stages' checkpoints (results removed): the same model, not a retrained one
    from alws.experiments.base import resume_experiment

    (out / "results.json").unlink()
    again, _ = resume_experiment(out, progress=False)
    assert again["learned_parameters"] == results["learned_parameters"]
    assert again["parameter_trajectory"] == results["parameter_trajectory"]


def test_the_second_stage_changes_only_the_regression_and_is_checked_like_a_set():
    config = hh.Config()
    refined = config.refined()
    assert (refined.exponential_family, refined.features, refined.kernel) == ("per-parameter", "learned+roughness", "gaussian+linear")
    assert (config.n_sleep, refined.n_sleep) == (200, 400)
    assert (refined.n_traces, refined.seed, refined.refine_steps) == (config.n_traces, config.seed, 0)
    with pytest.raises(ConfigError, match="n_traces cannot change"):
        hh.Config(refine_with={"n_traces": 3}).validate()
    with pytest.raises(ConfigError, match="exponential_family"):
        hh.Config(refine_with={"exponential_family": "sometimes"}).validate()
    with pytest.raises(ConfigError, match="unknown features"):
        hh.Config(refine_with={"features": "fft"}).validate()
    hh.Config(refine_with={"features": "fft"}, refine_steps=0).validate()  # no second stage: not read


def test_a_run_started_before_the_second_stage_resumes_with_one_stage():
    from alws.experiments.base import config_of_run, load_experiment

    module = load_experiment("hodgkin-huxley")
    assert config_of_run(module, {"steps": 200}, "config.json").refine_steps == 0
    assert config_of_run(module, {"steps": 200, "refine_steps": 50}, "config.json").refine_steps == 50


@pytest.mark.parametrize("override, message", [("dt=0", "dt must be > 0"), ("n_steps=10", "too short"), ("features=\"fft\"", "raw")])
def test_config_errors(override, message):
    from alws.experiments.base import load_experiment, resolve_config

    with pytest.raises(ConfigError, match=message):
        resolve_config(load_experiment("hodgkin-huxley"), overrides=[override])


def test_roughness_features_read_the_observation_noise_and_pass_the_feature_checks():
    current = hh.step_current(300, 10.0, 0.5)
    quiet = hh.HodgkinHuxley(current, params={**hh.TRUTH, "sigma_obs": 1.0})
    loud = hh.HodgkinHuxley(current, params={**hh.TRUTH, "sigma_obs": 4.0})
    with alws.seeding.seeded(0):
        x_quiet, x_loud = quiet.sample(40)[1], loud.sample(40)[1]
    features = hh.ProjectionAndRoughness(300, dim=8, segments=4)
    features.initialise(x_quiet)
    alws.features.check_features(features, x_quiet, trained=True)
    phi_quiet, phi_loud = features(x_quiet), features(x_loud)
    assert phi_quiet.shape == (40, 12)
    # four times the noise: each segment's median squared step about 16 times larger (log 16 = 2.8)
    shift = (features.roughness(x_loud) - features.roughness(x_quiet)).mean(0)
    assert torch.all(shift > 1.5) and torch.all(shift < 4.0), shift
    assert torch.all(phi_loud[:, 8:].mean(0) > phi_quiet[:, 8:].mean(0))
    with pytest.raises(ValueError, match="segments"):
        hh.ProjectionAndRoughness(300, segments=0)
