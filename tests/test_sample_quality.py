import numpy as np
import pytest
import scipy.linalg
import torch

from alws.sample_quality import feature_network, fid, frechet_distance, kid


def scipy_fid(a, b):
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * np.real(root)))


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_added_noise():
    torch.manual_seed(0)
    a = torch.randn(500, 8) @ torch.randn(8, 8)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    values = [fid(a, a + s * torch.randn_like(a)) for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(x < y for x, y in zip(values, values[1:]))


def test_fid_matches_a_scipy_reference():
    torch.manual_seed(1)
    a = torch.randn(400, 6) @ torch.randn(6, 6)
    b = torch.randn(300, 6) @ torch.randn(6, 6) + 0.5
    assert fid(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-6)


def test_frechet_distance_of_gaussians_in_closed_form():
    # 1-D: (mu_a - mu_b)^2 + (s_a - s_b)^2
    d = frechet_distance(torch.tensor([1.0]), torch.tensor([[4.0]]), torch.tensor([-1.0]), torch.tensor([[1.0]]))
    assert d == pytest.approx(4.0 + 1.0)


def test_kid_is_about_zero_for_two_samples_of_one_distribution_and_positive_for_different_ones():
    torch.manual_seed(2)
    same = [kid(torch.randn(300, 10), torch.randn(300, 10), subsets=20, subset_size=200, seed=s)[0] for s in range(10)]
    # unbiased: the mean over repeats is within a few standard errors of 0
    mean, se = float(np.mean(same)), float(np.std(same) / np.sqrt(len(same)))
    assert abs(mean) < 4 * se + 1e-3
    shifted = kid(torch.randn(300, 10), torch.randn(300, 10) + 0.5, subsets=20, subset_size=200)[0]
    assert shifted > 20 * max(abs(mean), se)


def test_feature_network_trains_once_then_loads_from_the_cache(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(64, 1, 12, 12)
    labels = (images.mean((1, 2, 3)) > 0.5).long()
    net, info = feature_network(images, labels, "toy", epochs=1, cache_dir=tmp_path)
    assert not info["cached"] and info["task"] == "labels"
    again, info2 = feature_network(images, labels, "toy", epochs=1, cache_dir=tmp_path)
    assert info2["cached"]
    assert torch.equal(net.features(images), again.features(images))
    unlabelled, info3 = feature_network(images, None, "toy", epochs=1, cache_dir=tmp_path)
    assert info3["task"] == "rotation" and not info3["cached"]
    assert net.features(images).shape == (64, 64)
