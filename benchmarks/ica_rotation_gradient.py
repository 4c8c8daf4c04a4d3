"""Benchmark: the rotation part of the noisy-ICA gradient, with and without the Stein control variate.

Model: Experiment IV's noisy ICA (4 sources in 8x8 patches, true W from FastICA, noise 0.1),
evaluated at W = W_true R for a rotation R of the sources (Amari distance about 0.3), where the
gradient that matters is the one that turns W back: the antisymmetric part of ``W^+ grad_W``.
Reference: self-normalised importance sampling of ``E[(x - W z) z^T | x] / sigma^2`` per data
point, 4000 draws from a Student-t (3 degrees of freedom) around the least-squares latent with
the likelihood's covariance (its own error is reported: two halves of the draws against each
other). For each seed, ``alws.gradient`` (N = 1000, exact regression) with kernel ridge or
nonnegative weights, with and without ``stein=["W"]``; reported: the relative error of the
rotation part and of the whole W-gradient, median over seeds.

    python benchmarks/ica_rotation_gradient.py [--seeds 5] [--batch 200]
"""
from __future__ import annotations

import argparse
import statistics

import torch
from torch import distributions as D

import alws
from alws.data.patches import natural_patches
from alws.evaluate import amari_distance
from alws.experiments.ica import NoisyICA, true_mixing
from alws.seeding import seeded
from common import write


def reference_gradient(model: NoisyICA, x: torch.Tensor, draws: int = 4000, seed: int = 0) -> tuple[torch.Tensor, float]:
    """``grad_W mean_b log p(x_b)`` by importance sampling, and the relative difference of its two halves."""
    W, sigma = model.W.detach().double(), float(model.log_sigma.detach().exp())
    x = x.double()
    cov = sigma**2 * torch.linalg.inv(W.T @ W)
    centre = x @ torch.linalg.pinv(W).T  # [B, K]
    scale = torch.linalg.cholesky(cov)
    proposal = D.StudentT(torch.tensor(3.0, dtype=torch.float64))
    halves = []
    for half in range(2):
        with seeded(seed + half):
            t = proposal.sample((draws // 2, *centre.shape)).double()
        z = centre[None] + t @ scale.T  # [S, B, K]
        log_q = proposal.log_prob(t).sum(-1)  # the Jacobian of the affine map is the same for every draw
        log_p = D.Laplace(0.0, 1.0).log_prob(z).sum(-1) + D.Normal(z @ W.T, sigma).log_prob(x[None]).sum(-1)
        w = torch.softmax(log_p - log_q, 0)  # [S, B]
        resid = x[None] - z @ W.T  # [S, B, D]
        g = torch.einsum("sb,sbd,sbk->dk", w, resid, z) / x.shape[0] / sigma**2
        halves.append(g)
    gradient = (halves[0] + halves[1]) / 2
    return gradient, float((halves[0] - halves[1]).norm() / gradient.norm())


def rotation(W: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Antisymmetric part of ``W^+ G``: the part of a W-gradient that rotates the sources."""
    M = torch.linalg.pinv(W) @ G
    return (M - M.T) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--angle", type=float, default=0.35, help="radians of each plane rotation applied to W_true")
    args = parser.parse_args()
    patches = natural_patches(8, 3000, 0)
    truth = true_mixing(patches, 4, 0)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    z = D.Laplace(0.0, 1.0).icdf(torch.rand(args.batch, 4, generator=generator).clamp(1e-7, 1 - 1e-7))
    x = z @ truth.T + 0.1 * torch.randn(args.batch, 64, generator=generator)
    A = torch.zeros(4, 4)
    A[0, 1], A[2, 3], A[1, 2] = args.angle, args.angle, args.angle / 2
    R = torch.linalg.matrix_exp(A - A.T)
    model = NoisyICA(64, 4, sigma=0.1, W0=truth @ R)
    reference, self_error = reference_gradient(model, x)
    W = model.W.detach().double()
    ref_rot = rotation(W, reference)
    print(f"Amari {amari_distance(model.W.detach(), truth):.3f}; reference |G| {reference.norm():.3g}, "
          f"rotation part {ref_rot.norm():.3g}, reference self-error {self_error:.3g}")
    rows = []
    for weights in ("krr", "nonnegative"):
        for stein in (False, ["W"]):
            rot_errors, errors = [], []
            for seed in range(args.seeds):
                G = alws.gradient(model, x, n_sleep=1000, regression="exact", weights=weights, stein=stein, seed=seed)["W"].double()
                rot_errors.append(float((rotation(W, G) - ref_rot).norm() / ref_rot.norm()))
                errors.append(float((G - reference).norm() / reference.norm()))
            rows.append({"weights": weights, "stein": bool(stein), "rotation_error": statistics.median(rot_errors),
                         "gradient_error": statistics.median(errors)})
            print(f"weights={weights:12s} stein={str(bool(stein)):5s} rotation-part error {rows[-1]['rotation_error']:.3f}, "
                  f"W-gradient error {rows[-1]['gradient_error']:.3f}")
    write("ica_rotation_gradient", {"amari": amari_distance(model.W.detach(), truth), "reference_norm": float(reference.norm()),
                                    "rotation_norm": float(ref_rot.norm()), "reference_self_error": self_error, "rows": rows})


if __name__ == "__main__":
    main()
