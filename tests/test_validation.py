"""Every bad input of the public functions gets an error that names the problem."""
import math

import pytest
import torch
from torch import nn

import alws
from alws.errors import DataError, ModelProtocolError
from alws.models import LinearGaussian


@pytest.fixture
def model():
    torch.manual_seed(0)
    return LinearGaussian(3, 1)


def test_data_shape_mismatch_names_both_shapes(model):
    with pytest.raises(DataError, match=r"\(4,\).*\(3,\)"):
        alws.fit(model, torch.randn(10, 4), steps=1, progress=False)


@pytest.mark.parametrize("bad, word", [(math.nan, "NaN"), (math.inf, "infinite")])
def test_non_finite_data_is_refused_with_its_index(model, bad, word):
    data = torch.randn(10, 3)
    data[7, 1] = bad
    with pytest.raises(DataError, match=rf"{word}.*\(7, 1\)"):
        alws.gradient(model, data)


def test_empty_data_is_refused(model):
    with pytest.raises(DataError, match="empty"):
        alws.fit(model, torch.randn(0, 3), steps=1, progress=False)


def test_too_few_sleep_samples(model):
    with pytest.raises(ValueError, match="n_sleep"):
        alws.gradient(model, torch.randn(5, 3), n_sleep=1)


@pytest.mark.parametrize("ridge", [0.0, -1e-3])
def test_non_positive_ridge(model, ridge):
    with pytest.raises(ValueError, match="ridge"):
        alws.gradient(model, torch.randn(5, 3), ridge=ridge)
    with pytest.raises(ValueError, match="ridge"):
        alws.gradient(model, torch.randn(5, 3), ridge_grid=(1e-3, ridge))


def test_unknown_regression_backend_lists_valid_ones(model):
    with pytest.raises(alws.ConfigError, match="exact, rff, nystrom"):
        alws.gradient(model, torch.randn(5, 3), regression="svd")


class WrongShape(LinearGaussian):
    def log_joint(self, z, x):
        return super().log_joint(z, x)[:, None]


class Detached(LinearGaussian):
    def log_joint(self, z, x):
        return super().log_joint(z, x).detach() + 0 * z.sum(1)


class NoParameters(nn.Module):
    def sample(self, n):
        return torch.randn(n, 1), torch.randn(n, 1)

    def log_joint(self, z, x):
        return -(z**2).sum(1)


class BadSample(LinearGaussian):
    def sample(self, n):
        return super().sample(n)[1]


class WrongHooks(LinearGaussian):
    """log_joint carries an extra parameter-dependent term that the hooks do not."""

    def log_joint(self, z, x):
        return super().log_joint(z, x) + self.bias.sum()


@pytest.mark.parametrize(
    "cls, message",
    [
        (WrongShape, r"returned shape \(4, 1\).*expected \(4,\)"),
        (Detached, "does not depend on any parameter"),
        (BadSample, r"must return a pair \(z, x\)"),
        (WrongHooks, "hooks disagree with log_joint"),
    ],
)
def test_model_protocol_violations(cls, message):
    with pytest.raises(ModelProtocolError, match=message):
        alws.check_model(cls(3, 1))


def test_model_without_parameters():
    with pytest.raises(ModelProtocolError, match="no trainable parameters"):
        alws.check_model(NoParameters())


def test_check_model_accepts_a_good_model_and_reports_the_fast_path(model):
    info = alws.check_model(model, torch.randn(4, 3))
    assert info.x_shape == (3,) and info.exponential_family


def test_bad_fit_arguments(model):
    for kwargs, word in [({"steps": 0}, "steps"), ({"batch_size": 0}, "batch_size"), ({"lr": -1.0}, "lr"), ({"optimizer": "lbfgs2"}, "optimizer")]:
        with pytest.raises(ValueError, match=word):
            alws.fit(model, torch.randn(10, 3), progress=False, **kwargs)


def test_data_is_converted_to_the_dtype_of_the_model_samples(model):
    as_double = torch.randn(10, 3, dtype=torch.float64)
    grads = alws.gradient(model, as_double, n_sleep=20)
    assert all(g.dtype == torch.float32 for g in grads.values())
    x = alws.validation.check_data(torch.tensor([[1.0], [2.0]]), (1,), dtype=torch.long)
    assert x.dtype == torch.long
    with pytest.raises(DataError, match="non-integer"):
        alws.validation.check_data(torch.tensor([[1.5]]), (1,), dtype=torch.long)
