import pytest
import torch

import alws
from alws.models import LinearGaussian


def factor_analysis_problem(x_dim=3, z_dim=1):
    """``(truth, data, model)``: a factor-analysis model (noise 0.5), 400 points from it, and a
    fresh model (noise 1.0) to fit. Seeded, so every caller gets the same problem."""
    torch.manual_seed(0)
    truth = LinearGaussian(x_dim, z_dim, sigma=0.5)
    with torch.no_grad():
        _, data = truth.sample(400)
    torch.manual_seed(1)
    return truth, data, LinearGaussian(x_dim, z_dim, sigma=1.0)


@pytest.fixture
def linear_gaussian_data():
    """3-D observations, 1 latent (see :func:`factor_analysis_problem`)."""
    return factor_analysis_problem()


def exact_mean_gradient(model, x):
    """Gradient of the exact mean log marginal of a LinearGaussian model."""
    names = [k for k, _ in model.named_parameters()]
    grads = torch.autograd.grad(model.log_marginal(x).mean(), list(model.parameters()))
    return dict(zip(names, grads))


def short_fit_problem():
    """``(model, data)`` of :func:`short_fit`: a fresh 3-D, 1-latent linear Gaussian model and 200
    standard-normal points (seeded: the same on every call)."""
    torch.manual_seed(1)
    model = LinearGaussian(3, 1)
    torch.manual_seed(2)
    return model, torch.randn(200, 3)


def short_fit(tmp_path=None, steps=12, resume=False, interrupt_at=None, seed=3, n_sleep=100, callbacks=(), **options):
    """``(model, history, iterates)`` of a short ALWS run on :func:`short_fit_problem`: the trained model, its
    history and its parameters after every step. ``tmp_path``: checkpoint there every 4 steps;
    ``interrupt_at``: raise ``KeyboardInterrupt`` after that step; ``options`` go to ``alws.fit``."""
    model, data = short_fit_problem()
    iterates = []

    def keep(step, record):
        iterates.append([p.detach().clone() for p in model.parameters()])
        if step == interrupt_at:
            raise KeyboardInterrupt

    checkpoint = None if tmp_path is None else tmp_path / "ckpt.pt"
    history = alws.fit(model, data, steps=steps, batch_size=32, n_sleep=n_sleep, lr=0.05, seed=seed, progress=False,
                       checkpoint=checkpoint, checkpoint_every=4, resume=resume, callbacks=[keep, *callbacks], **options)
    return model, history, iterates
