import pytest
import torch

from alws import regression
from alws.errors import NotPositiveDefiniteError
from alws.kernels import GaussianKernel, Kernel
from alws.linalg import cholesky_and_jitter

K = GaussianKernel()


def data(n=80, d=2, q=3, b=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True) * torch.arange(1, q + 1)) + 0.1 * torch.randn(n, q, generator=g, dtype=torch.float64)
    return x, y, torch.randn(b, d, generator=g, dtype=torch.float64)


def direct_prediction(features_x, features_w, y, ridge, center, gram=None):
    """float64 ridge prediction by torch.linalg.solve, from features or from a Gram matrix."""
    n = y.shape[0]
    mean = y.mean(0, keepdim=True) if center else torch.zeros_like(y[:1])
    if gram is not None:
        kxx, kwx = gram
        alpha = torch.linalg.solve(kxx + n * ridge * torch.eye(n, dtype=y.dtype), y - mean)
        return kwx @ alpha + mean
    beta = torch.linalg.solve(features_x.T @ features_x + n * ridge * torch.eye(features_x.shape[1], dtype=y.dtype), features_x.T @ (y - mean))
    return features_w @ beta + mean


@pytest.mark.parametrize("center", [True, False])
def test_exact_krr_matches_direct_solve(center):
    x, y, xw = data()
    reg = regression.ExactKRR(K, center).fit(x, 0.8, 1e-3)
    expected = direct_prediction(None, None, y, 1e-3, center, gram=(K(x, x, 0.8), K(xw, x, 0.8)))
    assert torch.allclose(reg.predict(xw, y), expected, atol=1e-9)


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("name", ["rff", "nystrom"])
def test_feature_ridge_matches_direct_solve_with_the_same_features(name, center):
    torch.manual_seed(0)
    x, y, xw = data(n=300)
    reg = regression.make_regressor(name, K, n_features=60, center=center, chunk_size=37).fit(x, 0.8, 1e-4)
    expected = direct_prediction(reg.psi(x), reg.psi(xw), y, 1e-4, center)
    assert torch.allclose(reg.predict(xw, y), expected, atol=1e-8)


@pytest.mark.parametrize("name", ["exact", "rff", "nystrom"])
def test_weights_for_more_statistics_than_wake_points_match_column_blocks(name):
    # q = 12 statistics for B = 5 wake points takes the solve-then-contract branch; blocks of
    # at most 5 columns take the contract-then-solve one: both are A R
    torch.manual_seed(0)
    x, _, xw = data(n=120, b=5)
    reg = regression.make_regressor(name, K, n_features=50).fit(x, 0.8, 1e-3)
    r = torch.randn(5, 12, dtype=torch.float64)
    blocks = torch.cat([reg.weights(xw, r[:, i : i + 4]) for i in range(0, 12, 4)], 1)
    assert torch.allclose(reg.weights(xw, r), blocks, atol=1e-10)


def test_feature_ridge_approaches_exact_krr_with_many_features():
    torch.manual_seed(0)
    x, y, xw = data(n=200)
    exact = regression.ExactKRR(K).fit(x, 1.0, 1e-3).predict(xw, y)
    for name in ("rff", "nystrom"):
        approx = regression.make_regressor(name, K, n_features=4000 if name == "rff" else 200).fit(x, 1.0, 1e-3).predict(xw, y)
        assert (approx - exact).abs().max() < 0.05, name


def test_centered_weights_sum_to_one_per_wake_point():
    x, _, xw = data()
    a = regression.ExactKRR(K).fit(x, 1.0, 1e-2).weights(xw, torch.eye(xw.shape[0], dtype=x.dtype))
    assert torch.allclose(a.sum(0), torch.ones(xw.shape[0], dtype=x.dtype))
    a_raw = regression.ExactKRR(K, center=False).fit(x, 1.0, 1e-2).weights(xw, torch.eye(xw.shape[0], dtype=x.dtype))
    assert not torch.allclose(a_raw.sum(0), torch.ones(xw.shape[0], dtype=x.dtype), atol=1e-3)


@pytest.mark.parametrize("center", [True, False])
def test_closed_form_loo_matches_brute_force(center):
    x, y, _ = data(n=40, q=2)
    bandwidths, ridges = [0.5, 1.5], [1e-3, 1e-1]
    fast = regression.loo_errors(x, y, K, bandwidths, ridges, center)
    yc = y - y.mean(0, keepdim=True) if center else y
    var = yc.var(0, unbiased=False)
    for i, bw in enumerate(bandwidths):
        for j, lam in enumerate(ridges):
            resid = []
            for k in range(40):
                keep = torch.arange(40) != k
                # the closed form refits with the same ridge on the full system size n
                gram = K(x[keep], x[keep], bw) + 40 * lam * torch.eye(39, dtype=x.dtype)
                pred = K(x[k : k + 1], x[keep], bw) @ torch.linalg.solve(gram, yc[keep])
                resid.append(yc[k] - pred[0])
            brute = ((torch.stack(resid) ** 2).mean(0) / var).mean()
            assert fast[i, j] == pytest.approx(float(brute), rel=1e-8)


@pytest.mark.parametrize("q", [2, 5])  # q > 2 contracts before the ridge loop
def test_contracted_loo_matches_brute_force(q):
    # the exponential-family path: k = 3 quantities, each q regressions contracted with s_i
    g = torch.Generator().manual_seed(1)
    n, k = 30, 3
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, :1, None] * torch.arange(1, k * q + 1, dtype=x.dtype).reshape(1, k, q))
    y = y + 0.1 * torch.randn(n, k, q, generator=g, dtype=x.dtype)
    stats = torch.randn(n, q, generator=g, dtype=x.dtype)
    bandwidths, ridges = [0.7, 2.0], [1e-4, 1e-2, 1.0]
    fast = regression.loo_errors(x, y, K, bandwidths, ridges, True, stats)
    yc = (y - y.mean(0, keepdim=True)).reshape(n, -1)
    var = torch.einsum("ikq,iq->ik", y, stats).var(0, unbiased=False)
    for i, bw in enumerate(bandwidths):
        for j, lam in enumerate(ridges):
            resid = []
            for m in range(n):
                keep = torch.arange(n) != m
                gram = K(x[keep], x[keep], bw) + n * lam * torch.eye(n - 1, dtype=x.dtype)
                pred = (K(x[m : m + 1], x[keep], bw) @ torch.linalg.solve(gram, yc[keep]))[0]
                resid.append(((yc[m] - pred).reshape(k, q) * stats[m]).sum(1))
            brute = ((torch.stack(resid) ** 2).mean(0) / var).mean()
            assert fast[i, j] == pytest.approx(float(brute), rel=1e-8)


@pytest.mark.parametrize("n_features", [60, 120])  # more features than the 40 samples
def test_loo_on_random_features_matches_brute_force_ridge_on_those_features(n_features):
    torch.manual_seed(0)
    x, y, _ = data(n=40, q=2)
    reg = regression.make_regressor("rff", K, n_features=n_features)
    features = reg.loo_features(x)
    bandwidths, ridges = [0.5, 1.5], [1e-4, 1e-1]
    fast = regression.loo_errors(x, y, K, bandwidths, ridges, True, features=features)
    yc = y - y.mean(0, keepdim=True)
    var = yc.var(0, unbiased=False)
    for i, bw in enumerate(bandwidths):
        psi = features(bw)(x)
        for j, lam in enumerate(ridges):
            resid = []
            for k in range(40):
                keep = torch.arange(40) != k
                gram = psi[keep] @ psi[keep].T + 40 * lam * torch.eye(39, dtype=x.dtype)
                resid.append(yc[k] - (psi[k : k + 1] @ psi[keep].T @ torch.linalg.solve(gram, yc[keep]))[0])
            brute = ((torch.stack(resid) ** 2).mean(0) / var).mean()
            assert fast[i, j] == pytest.approx(float(brute), rel=1e-6)
    # and it is not exact KRR's error (the features scored are the back-end's own)
    assert not torch.allclose(fast, regression.loo_errors(x, y, K, bandwidths, ridges, True), rtol=1e-3)
    # with no more features than points, and for exact KRR, exact KRR's errors are scored
    assert regression.make_regressor("rff", K, n_features=40).loo_features(x) is None
    assert regression.make_regressor("exact", K).loo_features(x) is None


def test_selection_returns_the_grid_minimum():
    x, y, _ = data(n=60)
    sel = regression.select_hyperparameters(x, y, K, [0.1, 1.0, 10.0], [1e-6, 1e-2, 10.0])
    errors = torch.tensor(sel.grid["loo_errors"])
    assert sel.loo_error == pytest.approx(float(errors.min()))
    assert sel.ridge != 10.0 and sel.bandwidth != 10.0  # a huge ridge or bandwidth cannot fit sin features


def test_selection_among_candidates_weighs_the_preferred_one_by_its_margin():
    """Without a preference the smaller error wins; with one, another candidate must beat the
    preferred one's error times ``margin``. A candidate whose targets are mostly noise loses."""
    x, y, _ = data(n=60)
    noisy = y + 0.6 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
    candidates = [("smooth", y, None), ("noisy", noisy, None)]
    key, smooth = regression.select_among(x, candidates, K, [0.5, 1.0], [1e-4, 1e-2])
    noisy_error = regression.select_among(x, candidates[1:], K, [0.5, 1.0], [1e-4, 1e-2])[1].loo_error
    assert key == "smooth" and smooth.loo_error < noisy_error
    ratio = smooth.loo_error / noisy_error
    assert regression.select_among(x, candidates, K, [0.5, 1.0], [1e-4, 1e-2], preferred="noisy", margin=min(1.0, 2 * ratio))[0] == "smooth"
    assert regression.select_among(x, candidates, K, [0.5, 1.0], [1e-4, 1e-2], preferred="noisy", margin=ratio / 2)[0] == "noisy"
    with pytest.raises(ValueError, match="margin"):
        regression.select_among(x, candidates, K, [1.0], [1e-2], preferred="noisy", margin=0.0)


class NegativeKernel(Kernel):
    """Not positive definite: minus a Gaussian."""

    def from_squared_distances(self, d2, bandwidth):
        return -torch.exp(-d2 / (2 * bandwidth**2))


def test_non_positive_definite_kernel_reports_condition_number():
    x, _, _ = data(n=30)
    with pytest.raises(NotPositiveDefiniteError, match="condition number"):
        regression.ExactKRR(NegativeKernel()).fit(x, 1.0, 1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "overflow"])
def test_a_system_with_non_finite_entries_is_refused_before_factorising(bad):
    """Checked through the sum first (cheap); a sum that overflows although every entry is finite
    is not refused."""
    a = torch.eye(4, dtype=torch.float64)
    if bad == "overflow":
        a = a * 1e308  # finite entries whose sum is inf: positive definite, factorised
        assert torch.isfinite(cholesky_and_jitter(a)[0]).all()
        return
    a[3, 0] = bad
    with pytest.raises(NotPositiveDefiniteError, match="NaN or infinite entries"):
        cholesky_and_jitter(a)


def test_auto_backend_uses_exact_for_small_and_rff_for_large_n():
    assert regression.choose_backend(1000) == "exact"
    assert regression.choose_backend(50_000) == "rff"


def test_small_factorisations_run_on_one_thread_and_restore_the_count():
    from alws.linalg import SINGLE_THREAD_BELOW, threads_for

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with threads_for(SINGLE_THREAD_BELOW["cholesky"] - 1, "cholesky"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with threads_for(SINGLE_THREAD_BELOW["cholesky"], "cholesky"):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_random_features_resume_with_the_same_frequencies_on_another_device():
    from alws.kernels import GaussianKernel
    from alws.regression import RandomFeatureRidge

    torch.manual_seed(0)
    x = torch.randn(50, 3, dtype=torch.float64)
    first = RandomFeatureRidge(GaussianKernel(), n_features=20)
    first.fit(x, 1.0, 1e-3)
    again = RandomFeatureRidge(GaussianKernel(), n_features=20)
    again.load_state_dict(first.state_dict())  # a checkpoint is loaded on the CPU
    loaded = again.rff
    assert torch.equal(loaded.base, first.rff.base)
    again._features(torch.empty(4, 3, dtype=torch.float64, device="meta"), 1.0)  # next step on another device
    assert again.rff is loaded and again.rff.base.device.type == "meta"  # moved there, not drawn anew
