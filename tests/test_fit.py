import math

import pytest
import torch

import alws
from alws.errors import CheckpointError, NonFiniteError
from alws.models import LinearGaussian


def test_fit_raises_the_data_log_likelihood_towards_the_maximum(linear_gaussian_data):
    truth, data, model = linear_gaussian_data
    with torch.no_grad():
        start = float(model.log_marginal(data).mean())
        best = float(truth.log_marginal(data).mean())  # the maximum is at least this
    history = alws.fit(model, data, steps=150, batch_size=100, n_sleep=300, lr=3e-2, seed=0, progress=False)
    with torch.no_grad():
        end = float(model.log_marginal(data).mean())
    assert len(history) == 150
    assert end > start + 0.5
    assert end > best - 0.1
    assert set(history[0]) >= {"step", "loss", "loo_error", "bandwidth", "ridge", "ess", "grad_norm", "time"}


class PoissonFactors(torch.nn.Module):
    """z ~ N(0, I_2), x | z ~ Poisson(exp(W z + b)) in 20 dimensions: a family and a model the
    library ships nothing for, written the way a user would (``likelihood`` gives the fast path)."""

    def __init__(self, scale):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(20, 2) * scale)
        self.bias = torch.nn.Parameter(torch.ones(20))

    def log_prior(self, z):
        return torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)

    def likelihood(self, z):
        return torch.distributions.Independent(torch.distributions.Poisson(torch.exp(z @ self.weight.T + self.bias)), 1)

    def sample(self, n):
        z = torch.randn(n, 2)
        return z, self.likelihood(z).sample()

    def log_joint(self, z, x):
        return self.log_prior(z) + self.likelihood(z).log_prob(x)

    def log_marginal(self, x, n=20000):
        """``mean_b log p(x_b)`` by importance sampling from the prior (2-D latent: accurate to ~0.01)."""
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(123)
            rates = torch.exp(torch.randn(n, 2) @ self.weight.T + self.bias)  # [n, 20]
            log_lik = (x[None] * rates.log()[:, None] - rates[:, None] - torch.lgamma(x[None] + 1)).sum(-1)  # [n, B]
            return float((torch.logsumexp(log_lik, 0) - math.log(n)).mean())


def test_an_unseen_count_model_reaches_the_true_likelihood_with_the_default_options():
    """A Poisson factor model with 20-D counts: the defaults learn a projection of x (more than 12
    numbers) and take the fast path; from 25 nats per point below, the fit ends within 0.7 of the
    truth's log-likelihood (measured 0.1-0.5 over three seeds)."""
    torch.manual_seed(0)
    truth = PoissonFactors(scale=0.6)
    with torch.no_grad():
        _, data = truth.sample(1000)
    torch.manual_seed(1)
    model = PoissonFactors(scale=0.3)
    start, best = model.log_marginal(data[:500]), truth.log_marginal(data[:500])
    history = alws.fit(model, data, steps=150, batch_size=100, n_sleep=300, lr=0.03, seed=0, progress=False)
    end = model.log_marginal(data[:500])
    assert best - start > 20
    assert end > best - 0.7
    assert history[-1]["path"] == "exponential-family" and math.isfinite(history[-1]["kernel_error"])



class CountMixture(torch.nn.Module):
    """A discrete latent in a dict, ``{"k": k}``, ``k ~ Categorical(pi)`` over three rates, and
    ``x [6] ~ Poisson(rate_k)`` stored as int64: only ``sample`` and ``log_joint``, so the plain
    path; the marginal is exact by enumeration."""

    def __init__(self, logits, log_rates):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits))
        self.log_rates = torch.nn.Parameter(torch.tensor(log_rates))

    def sample(self, n):
        k = torch.distributions.Categorical(logits=self.logits).sample((n,))
        return {"k": k}, torch.poisson(self.log_rates.exp()[k][:, None].expand(n, 6)).long()

    def log_joint(self, z, x):
        k = z["k"]
        log_lik = torch.distributions.Poisson(self.log_rates.exp()[k][:, None]).log_prob(x.double()).sum(1)
        return torch.distributions.Categorical(logits=self.logits).log_prob(k) + log_lik

    def log_marginal(self, x):
        per_class = torch.distributions.Poisson(self.log_rates.exp()[None, :, None]).log_prob(x.double()[:, None]).sum(-1)
        return torch.logsumexp(per_class + torch.log_softmax(self.logits, 0), 1)


def test_a_discrete_latent_in_a_dict_with_integer_counts_reaches_the_maximum_likelihood():
    """From 6.1 nats per point below, the default options end within 0.02 of the exact maximum
    (found by Adam on the enumerated marginal; measured 0.0015 at 400 steps, 0.74 at 30)."""
    torch.manual_seed(0)
    truth = CountMixture([0.3, 0.0, -0.3], [-0.5, 1.0, 2.2]).double()
    with torch.no_grad():
        _, data = truth.sample(600)
    assert data.dtype == torch.int64
    reference = CountMixture([0.3, 0.0, -0.3], [-0.5, 1.0, 2.2]).double()
    optimiser = torch.optim.Adam(reference.parameters(), lr=0.02)
    for _ in range(1500):
        optimiser.zero_grad()
        (-reference.log_marginal(data).mean()).backward()
        optimiser.step()
    model = CountMixture([0.0, 0.0, 0.0], [0.0, 0.5, 1.0]).double()
    with torch.no_grad():
        best, start = float(reference.log_marginal(data).mean()), float(model.log_marginal(data).mean())
    history = alws.fit(model, data, steps=400, n_sleep=500, lr=0.03, seed=0, progress=False)
    with torch.no_grad():
        end = float(model.log_marginal(data).mean())
    assert best - start > 5.0
    assert best - end < 0.02
    assert history[-1]["path"] == "log-joint"

def run(tmp_path, steps, interrupt_at=None, resume=False, regression="exact"):
    torch.manual_seed(1)
    model = LinearGaussian(3, 1)
    torch.manual_seed(2)
    data = torch.randn(200, 3)

    def interrupt(step, record):
        if step == interrupt_at:
            raise KeyboardInterrupt

    alws.fit(
        model, data, steps=steps, batch_size=32, n_sleep=120, lr=1e-2, seed=3, progress=False,
        checkpoint=tmp_path / "ckpt.pt", checkpoint_every=4, resume=resume, callbacks=[interrupt],
        regression=regression, select_every=3, n_features=50,
    )
    return model


@pytest.mark.parametrize("regression", ["exact", "rff", "nystrom"])
def test_resume_after_interruption_gives_the_uninterrupted_parameters(tmp_path, regression):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    straight = run(tmp_path / "a", 10, regression=regression)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", 10, interrupt_at=6, regression=regression)
    resumed = run(tmp_path / "b", 10, resume=True, regression=regression)
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    saved = alws.training.load_checkpoint(tmp_path / "b" / "ckpt.pt")
    assert saved["step"] == 10 and len(saved["history"]) == 10


def test_existing_checkpoint_is_not_overwritten_without_resume(tmp_path):
    run(tmp_path, 4)
    with pytest.raises(CheckpointError, match="already exists"):
        run(tmp_path, 4)


def test_resume_refuses_a_checkpoint_of_another_model_or_config(tmp_path):
    run(tmp_path, 4)
    data = torch.randn(200, 3)
    with pytest.raises(CheckpointError, match="parameters"):
        alws.fit(LinearGaussian(3, 2), data, steps=8, checkpoint=tmp_path / "ckpt.pt", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="n_sleep"):
        alws.fit(LinearGaussian(3, 1), data, steps=8, batch_size=32, n_sleep=99, checkpoint=tmp_path / "ckpt.pt", resume=True, progress=False)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    run(tmp_path, 4)
    good = (tmp_path / "ckpt.pt").read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(alws.training.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        alws.training.atomic_save({"x": 1}, tmp_path / "ckpt.pt")
    assert (tmp_path / "ckpt.pt").read_bytes() == good
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


class Poisonable(LinearGaussian):
    poisoned = False

    def log_joint(self, z, x):
        out = super().log_joint(z, x)
        return out * math.nan if self.poisoned else out


def test_non_finite_loss_stops_with_the_step_and_keeps_finite_parameters(tmp_path):
    torch.manual_seed(0)
    model = Poisonable(3, 1)
    data = torch.randn(100, 3)
    snapshot = {}

    def poison(step, record):
        if step == 3:
            snapshot.update({k: p.detach().clone() for k, p in model.named_parameters()})
            model.poisoned = True

    with pytest.raises(NonFiniteError, match="step 4.*last consistent checkpoint .*c.pt is kept"):
        alws.fit(model, data, steps=10, n_sleep=50, progress=False, callbacks=[poison], exponential_family=False,
                 checkpoint=tmp_path / "c.pt", checkpoint_every=1)
    for k, p in model.named_parameters():
        assert torch.isfinite(p).all()
        assert torch.equal(p, snapshot[k])
    # the consistent state after step 3 is not overwritten by the failed step's (advanced random state)
    assert alws.training.load_checkpoint(tmp_path / "c.pt")["step"] == 3
    assert alws.training.load_checkpoint(tmp_path / "c.pt.failed")["step"] == 3


def test_stop_training_from_a_callback_ends_cleanly(tmp_path):
    def stop(step, record):
        if step == 2:
            raise alws.StopTraining

    history = alws.fit(LinearGaussian(2, 1), torch.randn(50, 2), steps=10, n_sleep=30, progress=False, callbacks=[stop])
    assert len(history) == 2 and history.column("step") == [1, 2]


def test_penalty_is_added_to_the_loss_and_pulls_parameters():
    torch.manual_seed(0)
    data = torch.randn(100, 2) + 3.0
    free, held = LinearGaussian(2, 1), LinearGaussian(2, 1)
    held.load_state_dict(free.state_dict())
    alws.fit(free, data, steps=60, n_sleep=100, lr=0.05, seed=0, progress=False)
    history = alws.fit(held, data, steps=60, n_sleep=100, lr=0.05, seed=0, progress=False, penalty=lambda m: 100.0 * (m.bias**2).sum())
    assert history[-1]["penalty"] >= 0
    assert float(held.bias.detach().norm()) < 0.5 * float(free.bias.detach().norm())  # the data pull the bias to 3; the penalty to 0


def test_an_objective_with_its_own_learner_class_trains_with_that_learner():
    """``ALWSObjective.learner_class``: a subclass of ALWS that gives every sleep sample the same
    weight trains with it (effective sample size N at every step), the default does not."""
    from alws.learner import ALWS, ALWSObjective

    class Uniform(ALWS):
        def wake_weights(self, phi_wake, record=None, table=None):
            return torch.full((self.n_sleep, phi_wake.shape[0]), 1.0 / self.n_sleep, dtype=torch.float64)

    class UniformObjective(ALWSObjective):
        learner_class = Uniform

    data = torch.randn(60, 2) + 2.0
    uniform = UniformObjective(LinearGaussian(2, 1), n_sleep=40, weights="nonnegative")
    with pytest.warns(RuntimeWarning, match="carries the same weight"):  # what equal weights mean, said once
        history = alws.fit(uniform, data, steps=3, seed=0, progress=False)
    assert isinstance(uniform.learner, Uniform)
    assert history.column("ess") == pytest.approx([40.0] * 3)
    default = alws.fit(LinearGaussian(2, 1), data, steps=3, n_sleep=40, weights="nonnegative", seed=0, progress=False)
    assert max(default.column("ess")) < 39.0


class Scaled:
    """A feature map that is an object (no __qualname__): its description must be stable."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, x):
        return x * self.factor


def test_resume_with_a_feature_object_created_anew(tmp_path):
    data = torch.randn(100, 3)
    first = LinearGaussian(3, 1)
    alws.fit(first, data, steps=4, n_sleep=30, checkpoint=tmp_path / "c.pt", features=Scaled(2.0), progress=False, seed=0)
    again = LinearGaussian(3, 1)
    alws.fit(again, data, steps=6, n_sleep=30, checkpoint=tmp_path / "c.pt", features=Scaled(2.0), progress=False, seed=0, resume=True)
    with pytest.raises(CheckpointError, match="factor=3.0"):
        alws.fit(LinearGaussian(3, 1), data, steps=8, n_sleep=30, checkpoint=tmp_path / "c.pt", features=Scaled(3.0), progress=False, seed=0, resume=True)


def test_a_flipped_bit_in_a_checkpoint_is_detected(tmp_path):
    run(tmp_path, 4)
    raw = bytearray((tmp_path / "ckpt.pt").read_bytes())
    raw[len(raw) // 2] ^= 0x10
    (tmp_path / "ckpt.pt").write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt"):
        run(tmp_path, 8, resume=True)


def test_a_pickle_in_place_of_a_checkpoint_is_never_unpickled(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path(%r).write_text('ran')" % str(tmp_path / "owned"),))

    (tmp_path / "ckpt.pt").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match="not an alws checkpoint"):
        run(tmp_path, 8, resume=True)
    torch.save({"format": "alws-checkpoint-v2", "evil": Payload()}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="not an alws checkpoint"):
        run(tmp_path, 8, resume=True)
    assert not (tmp_path / "owned").exists()


def test_resume_refuses_other_data_of_the_same_shape_and_fewer_steps_than_done(tmp_path):
    run(tmp_path, 4)
    torch.manual_seed(99)
    with pytest.raises(CheckpointError, match="sha256"):
        alws.fit(LinearGaussian(3, 1), torch.randn(200, 3), steps=8, batch_size=32, n_sleep=60, seed=0, checkpoint=tmp_path / "ckpt.pt",
                 resume=True, progress=False)
    with pytest.raises(CheckpointError, match="at step 4, beyond the 2 steps"):
        run(tmp_path, 2, resume=True)


def test_stale_temporary_files_of_killed_writes_are_removed(tmp_path):
    (tmp_path / ".ckpt.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    run(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.history.jsonl", "ckpt.pt"]


@pytest.mark.filterwarnings("ignore:every one of the")
def test_an_update_that_overflows_is_undone_and_stops_training(tmp_path):
    torch.manual_seed(0)
    model = LinearGaussian(3, 1)
    before = {k: p.detach().clone() for k, p in model.named_parameters()}

    def huge(params):
        return torch.optim.SGD(params, lr=1e38)  # |lr * gradient| > 3.4e38 (float32) for the bias

    with pytest.raises(NonFiniteError, match="update made a parameter non-finite"):
        alws.fit(model, torch.randn(100, 3) + 5.0, steps=3, n_sleep=50, progress=False, optimizer=huge)
    for k, p in model.named_parameters():
        assert torch.equal(p, before[k])


def test_files_are_written_with_the_usual_permissions(tmp_path):
    import os

    alws.training.atomic_write_text(tmp_path / "results.json", "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644 & ~umask


def test_a_checkpoint_of_the_previous_layout_is_refused_with_an_explanation(tmp_path):
    model = LinearGaussian(3, 1)
    alws.training.save_checkpoint({"format": "alws-checkpoint-v2", "fingerprint": {}, "step": 3}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="earlier alws"):
        alws.fit(model, torch.randn(20, 3), steps=5, n_sleep=50, progress=False, checkpoint=tmp_path / "ckpt.pt", resume=True)


def test_any_objective_trains_on_the_one_loop_with_the_same_options(tmp_path):
    from alws.baselines import make_objective
    from alws.objective import TrainOptions

    torch.manual_seed(0)
    data = torch.randn(60, 3)
    options = TrainOptions(steps=4, batch_size=20, seed=0, progress=False, checkpoint=tmp_path / "rws.pt")
    history = alws.fit(make_objective("rws", LinearGaussian(3, 1), particles=4), data, options)
    assert len(history) == 4 and all(math.isfinite(r["loss"]) for r in history)
    # training keywords and options= together are ambiguous; an objective takes no ALWS options
    with pytest.raises(alws.ConfigError, match="not both"):
        alws.fit(LinearGaussian(3, 1), data, options, steps=3)
    with pytest.raises(alws.ConfigError, match="n_sleep"):
        alws.fit(make_objective("vae", LinearGaussian(3, 1)), data, n_sleep=10)
