import pytest
import torch
from torch import nn

from alws.errors import ModelProtocolError
from alws.features import ConvFeatures, LinearProjection, MLPFeatures, RandomProjection, check_features, make_features


def test_linear_projection_starts_on_the_leading_principal_subspace_without_targets():
    torch.manual_seed(0)
    x = torch.randn(500, 10) * torch.tensor([5.0, 3.0] + [0.1] * 8)
    features = LinearProjection(10, 2)
    features.initialise(x)
    weight = features.weight.detach()
    assert weight[:, 2:].abs().max() < 0.05 * weight[:, :2].abs().max()


def test_linear_projection_starts_at_what_predicts_the_targets():
    # the targets depend on a low-variance coordinate: principal directions would miss it
    torch.manual_seed(0)
    x = torch.randn(400, 12) * torch.tensor([5.0, 4.0, 3.0] + [0.3] * 9)
    y = torch.stack([x[:, 7], torch.tanh(x[:, 7])], 1)
    features = LinearProjection(12, 1)
    features.initialise(x, y)
    weight = features.weight.detach()[0].abs()
    assert int(weight.argmax()) == 7 and weight[7] > 5 * weight[torch.arange(12) != 7].max()


def test_linear_projection_keeps_its_scale_when_renormalised():
    features = LinearProjection((2, 5), 3)
    with torch.no_grad():
        features.weight.mul_(40.0)
    features.renormalise()
    assert features.weight.pow(2).mean().item() == pytest.approx(1.0)
    assert features(torch.randn(7, 2, 5)).shape == (7, 3)


@pytest.mark.parametrize("shape", [(32,), (12, 12), (3, 8, 8)])
def test_conv_features_take_series_and_images(shape):
    features = ConvFeatures(shape, dim=5, width=4)
    x = torch.randn(6, *shape)
    features.initialise(x)
    assert features(x).shape == (6, 5)
    check_features(features, x)


def test_conv_features_refuse_other_shapes():
    with pytest.raises(ValueError, match="series"):
        ConvFeatures((2, 3, 8, 8))
    with pytest.raises(ValueError, match=">= 4"):
        ConvFeatures((3, 2))


def test_random_projection_is_fixed_by_its_seed():
    x = torch.rand(3, 1, 4, 4)
    assert torch.equal(RandomProjection(16, 5, seed=2)(x), RandomProjection(16, 5, seed=2)(x))
    assert not torch.equal(RandomProjection(16, 5, seed=2)(x), RandomProjection(16, 5, seed=3)(x))


def test_make_features_by_name_leaves_the_global_random_state_alone():
    state = torch.get_rng_state()
    first = make_features("mlp", (6,), dim=3, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert isinstance(first, MLPFeatures)
    assert torch.equal(first.net[0].weight, make_features("mlp", (6,), dim=3, seed=1).net[0].weight)
    with pytest.raises(ValueError, match="unknown features 'pca'; valid: auto, none, linear"):
        make_features("pca", (6,))


def test_check_features_names_each_problem():
    x = torch.randn(8, 4)
    with pytest.raises(ModelProtocolError, match="returned \\(3, 2\\) for 8 samples"):
        check_features(lambda v: torch.zeros(3, 2), x)
    with pytest.raises(ModelProtocolError, match="NaN or infinite"):
        check_features(lambda v: v / 0.0, x)
    batch_norm = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    with pytest.raises(ModelProtocolError, match="Sequential in training mode depends on the batch"):
        check_features(batch_norm, x, trained=True)
    check_features(batch_norm, x)  # evaluation mode only: running statistics, one function
    check_features(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)), x)  # per-sample normalisation is fine
