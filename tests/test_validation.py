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


class NonFiniteSamples(LinearGaussian):
    """A simulator that diverges: one sample's x is NaN."""

    def sample(self, n):
        z, x = super().sample(n)
        x[0, 0] = float("nan")
        return z, x


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
        (NonFiniteSamples, r"sample\(4\) returned x with 1 non-finite"),
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


def test_complex_data_and_data_beyond_float32_are_refused(model):
    with pytest.raises(DataError, match="complex"):
        alws.gradient(model, torch.randn(10, 3, dtype=torch.complex64))
    data = torch.randn(10, 3, dtype=torch.float64)
    data[2, 0] = 1e300
    with pytest.raises(DataError, match="beyond the range of the model's torch.float32"):
        alws.gradient(model, data)


@pytest.mark.parametrize("bandwidth, word", [(1e-200, "unrelated"), (1e200, "identical")])
def test_absurd_bandwidths_are_refused_relative_to_the_data_scale(model, bandwidth, word):
    with pytest.raises(alws.ConfigError, match=f"times the median distance.*{word}"):
        alws.gradient(model, torch.randn(10, 3), n_sleep=40, bandwidth=bandwidth)


def test_exact_regression_that_cannot_fit_in_memory_is_refused_before_allocating(model):
    with pytest.raises(alws.ConfigError, match="n_sleep=200000 needs about 894.1 GiB.*use regression='rff'"):
        alws.ALWS(model, n_sleep=200000, regression="exact")


def test_option_errors_are_alws_errors_and_value_errors(model):
    for bad in (dict(steps=0), dict(lr=-1.0)):
        with pytest.raises(alws.ConfigError) as caught:
            alws.fit(model, torch.randn(10, 3), progress=False, **bad)
        assert isinstance(caught.value, ValueError)


def test_data_out_of_the_kernels_reach_warns_once(model):
    data = torch.randn(40, 3) + 1e4  # far from every sleep sample
    with pytest.warns(RuntimeWarning, match="beyond the kernel's reach"):
        history = alws.fit(model, data, steps=2, n_sleep=50, bandwidth=1.0, ridge=1e-3, progress=False)
    assert history[0]["ess"] == pytest.approx(50)


def test_the_jitter_a_factorisation_needed_is_recorded(model):
    from alws.kernels import GaussianKernel
    from alws.regression import ExactKRR

    repeated = torch.randn(5, 2, dtype=torch.float64).repeat(4, 1)  # a singular kernel matrix
    assert ExactKRR(GaussianKernel()).fit(repeated, 1.0, 1e-300).jitter > 0
    assert ExactKRR(GaussianKernel()).fit(repeated, 1.0, 1e-2).jitter == 0
    history = alws.fit(model, torch.randn(40, 3), steps=1, n_sleep=50, progress=False)
    assert history[0]["jitter"] == 0


def test_an_unknown_option_is_refused_before_training_with_the_closest_valid_name(model):
    from alws.errors import ConfigError

    data = torch.randn(10, 3)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) ridg \(did you mean ridge\?\)"):
        alws.fit(model, data, steps=1, progress=False, ridg=0.1)
    with pytest.raises(ConfigError, match=r"device.*model\.to\(device\)"):
        alws.fit(model, data, steps=1, progress=False, device="cpu")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) kernal \(did you mean kernel\?\)"):
        alws.gradient(model, data, kernal="gaussian")
    assert model.weight.grad is None  # refused before any step
    # a valid learner option still passes through
    assert len(alws.fit(model, data, steps=1, progress=False, n_sleep=20, ridge=0.1)) == 1
