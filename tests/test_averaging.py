import pytest
import torch

import alws
from alws.errors import CheckpointError

from conftest import short_fit


def train(tmp_path=None, average_from=None, **options):
    """``(model, iterates)`` of :func:`conftest.short_fit` with ``average_from``."""
    model, _, iterates = short_fit(tmp_path, average_from=average_from, **options)
    return model, iterates


def test_the_model_ends_at_the_mean_of_its_iterates_and_the_path_is_unchanged():
    plain, plain_iterates = train()
    averaged, iterates = train(average_from=7)
    for a, b in zip(plain_iterates, iterates):  # averaging does not change the optimiser's path
        assert all(torch.equal(p, q) for p, q in zip(a, b))
    for i, parameter in enumerate(averaged.parameters()):
        mean = torch.stack([step[i] for step in iterates[6:]]).mean(0)
        torch.testing.assert_close(parameter.detach(), mean)
        assert not torch.equal(parameter.detach(), iterates[-1][i])  # not the last iterate
    assert torch.equal(next(plain.parameters()).detach(), iterates[-1][0])  # the plain run ends at the last iterate


def test_averaging_from_the_last_step_keeps_the_last_iterate():
    model, iterates = train(average_from=12)
    assert all(torch.equal(p.detach(), q) for p, q in zip(model.parameters(), iterates[-1]))


def test_an_interrupted_averaged_run_resumes_to_the_same_average(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    straight, _ = train(tmp_path / "a", average_from=5)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "b", average_from=5, interrupt_at=10)  # inside the averaging window
    resumed, _ = train(tmp_path / "b", average_from=5, resume=True)
    again, _ = train(tmp_path / "b", average_from=5, resume=True)  # a finished run read back
    for p, q, r in zip(straight.parameters(), resumed.parameters(), again.parameters()):
        assert torch.equal(p, q) and torch.equal(p, r)
    history = alws.training.load_checkpoint(tmp_path / "b" / "ckpt.pt")["history"]
    assert [r.get("averaged_steps") for r in history] == [None] * 4 + list(range(1, 9))


def test_a_run_stopped_before_the_window_warns_and_keeps_the_last_iterate():
    def stop(step, record):
        if step == 5:
            raise alws.StopTraining

    with pytest.warns(UserWarning, match="average_from=8 was not reached: training stopped at step 5"):
        model, iterates = train(average_from=8, callbacks=[stop])
    assert all(torch.equal(p.detach(), q) for p, q in zip(model.parameters(), iterates[-1]))


def test_averaging_settings_are_checked(tmp_path):
    for bad in (0, -3, 1.5):
        with pytest.raises(alws.ConfigError, match="average_from"):
            train(average_from=bad)
    with pytest.raises(alws.ConfigError, match="after the last step"):
        train(average_from=13)
    train(tmp_path, steps=4)
    with pytest.raises(CheckpointError, match="average_from"):  # a resume may not change the window
        train(tmp_path, steps=8, average_from=5, resume=True)


@pytest.mark.slow
def test_averaging_narrows_the_spread_of_noisy_estimates_over_seeds():
    """Few sleep samples and a large step: the last iterate wanders; its mean over the last half
    of training varies less from seed to seed (the noise scale's spread, over 6 seeds)."""

    def log_sigma(average_from, seed):  # [3]
        model, _ = train(steps=120, average_from=average_from, seed=seed, n_sleep=40)
        return model.log_sigma.detach()

    last = torch.stack([log_sigma(None, seed) for seed in range(6)]).std(0).mean()
    mean = torch.stack([log_sigma(61, seed) for seed in range(6)]).std(0).mean()
    assert mean < 0.7 * last, (mean, last)


def test_an_experiments_average_is_a_fraction_of_its_steps(tmp_path):
    import logging

    from alws.experiments.base import RunContext, TrainingConfig

    ctx = RunContext(tmp_path, False, False, logging.getLogger("test"))
    config = TrainingConfig(steps=200, average=0.25)
    config.validate()
    assert ctx.train_options("a", config).average_from == 151  # steps 151..200: a quarter
    assert ctx.train_options("b", config, steps=10).average_from == 8  # a stage's own steps
    assert ctx.train_options("c", TrainingConfig(steps=200)).average_from is None
    with pytest.raises(alws.ConfigError, match="average"):
        TrainingConfig(average=1.5).validate()
