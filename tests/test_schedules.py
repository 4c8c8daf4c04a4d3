import math

import pytest
import torch

import alws
from alws.errors import CheckpointError
from alws.schedules import lr_factor

from conftest import short_fit, short_fit_problem


train = short_fit


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_the_rate_runs_from_lr_to_its_end_factor_and_falls_monotonically(kind):
    _, history, _ = train(lr_schedule=kind, lr_end_factor=0.1)
    rates = history.column("lr")
    assert rates[0] == pytest.approx(0.05) and rates[-1] == pytest.approx(0.005)
    assert all(b < a for a, b in zip(rates, rates[1:]))
    middle = rates[len(rates) // 2]  # step 7 of 12: the two shapes differ there
    expected = 0.005 + 0.045 * (0.5 * (1 + math.cos(math.pi * 6 / 11)) if kind == "cosine" else 1 - 6 / 11)
    assert middle == pytest.approx(expected)


def test_the_optimiser_takes_the_scheduled_rate():
    """Plain SGD's update is ``lr * gradient``: the step sizes follow the schedule, not the constant."""
    model, data = short_fit_problem()
    rates, moves, before = [], [], [p.detach().clone() for p in model.parameters()]

    def watch(step, record):
        nonlocal before
        after = [p.detach().clone() for p in model.parameters()]
        moves.append(sum(float((a - b).norm() ** 2) for a, b in zip(after, before)) ** 0.5 / record["grad_norm"])
        rates.append(record["lr"])
        before = after

    alws.fit(model, data, steps=6, batch_size=32, n_sleep=100, lr=0.05, seed=3, progress=False, optimizer="sgd",
             lr_schedule="linear", lr_end_factor=0.2, callbacks=[watch])
    assert moves == pytest.approx(rates, rel=1e-4)
    assert rates[-1] == pytest.approx(0.01)


def test_a_constant_schedule_is_the_plain_run():
    plain, history, _ = train()
    constant, _, _ = train(lr_schedule="constant")
    assert "lr" not in history[0]
    assert all(torch.equal(p, q) for p, q in zip(plain.parameters(), constant.parameters()))


def test_an_interrupted_scheduled_run_resumes_exactly(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    straight, history, _ = train(tmp_path / "a", lr_schedule="cosine")
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", lr_schedule="cosine", interrupt_at=6)
    resumed, resumed_history, _ = train(tmp_path / "b", lr_schedule="cosine", resume=True)
    assert all(torch.equal(p, q) for p, q in zip(straight.parameters(), resumed.parameters()))
    assert resumed_history.column("lr") == history.column("lr")
    with pytest.raises(CheckpointError, match="lr_schedule"):  # another horizon would change the rates already taken
        train(tmp_path / "b", steps=20, lr_schedule="cosine", resume=True)
    with pytest.raises(CheckpointError, match="lr_schedule"):
        train(tmp_path / "b", lr_schedule="linear", resume=True)


def test_schedule_settings_are_checked():
    with pytest.raises(alws.ConfigError, match="unknown lr_schedule 'cosin'"):
        train(lr_schedule="cosin")
    for bad in (-0.1, 1.5, True, "0.1"):
        with pytest.raises(alws.ConfigError, match="lr_end_factor"):
            train(lr_schedule="cosine", lr_end_factor=bad)


def test_the_factor_holds_its_end_past_the_horizon_and_a_single_step_keeps_lr():
    assert lr_factor("cosine", 50, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor("linear", 0, 1, 0.1) == 1.0


def test_every_optimiser_of_a_baseline_is_scheduled():
    """WGAN-GP has two optimisers (generator and critic): each is scheduled and recorded."""
    from alws import baselines

    model, data = short_fit_problem()
    history = baselines.fit("wgan-gp", model, data, steps=5, batch_size=32, lr=0.01, seed=0, progress=False,
                            lr_schedule="linear", lr_end_factor=0.5)
    assert history[0]["lr_generator"] == pytest.approx(0.01) and history[0]["lr_critic"] == pytest.approx(0.01)
    assert history[-1]["lr_generator"] == pytest.approx(0.005) and history[-1]["lr_critic"] == pytest.approx(0.005)


def test_an_experiment_config_carries_the_schedule_to_its_alws_run(tmp_path):
    import logging

    from alws.experiments.base import RunContext, TrainingConfig

    ctx = RunContext(tmp_path, False, False, logging.getLogger("test"))
    config = TrainingConfig(steps=200, lr_schedule="cosine", lr_end_factor=0.05)
    config.validate()
    options = ctx.train_options("a", config)
    assert (options.lr_schedule, options.lr_end_factor, options.steps) == ("cosine", 0.05, 200)
    with pytest.raises(alws.ConfigError, match="lr_schedule"):
        TrainingConfig(lr_schedule="step").validate()


def test_the_rate_is_a_function_of_the_step_even_from_a_schedule_left_behind():
    """A state saved between a step and its bookkeeping (an interrupt) holds a schedule one step
    behind; the step brings it up to date before it runs, so the rate still matches the step."""
    from alws.objective import _scheduled
    from alws.schedules import make_lr_scheduler

    parameter = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = make_lr_scheduler(optimizer, "linear", 11, 0.0)

    def step(batch, index):
        optimizer.step()
        return {}

    scheduled = _scheduled(step, {"optimizer": scheduler})
    assert scheduled(None, 1)["lr"] == pytest.approx(1.0)
    assert scheduled(None, 5)["lr"] == pytest.approx(0.6)  # steps 2-4 skipped: caught up
    assert scheduled(None, 11)["lr"] == pytest.approx(0.0)


def test_a_scheduled_run_stopped_before_its_horizon_warns_with_the_rate_it_reached():
    def stop(step, record):
        if step == 5:
            raise alws.StopTraining

    with pytest.warns(UserWarning, match=r"spans 12 steps, but training stopped at step 5 .* rate at 0\.0318 \(lr 0\.05\)"):
        _, history, _ = train(lr_schedule="linear", lr_end_factor=0.0, callbacks=[stop])
    assert len(history) == 5
