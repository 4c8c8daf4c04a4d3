"""Benchmark: how well kernel ridge regression on sleep samples resolves what ICA's W-gradient needs.

With the Stein control variate (``stein=["W"]``) the span part of the noisy-ICA W-gradient is
``W^+T (mean_b E[sign(z) z^T | x_b] - I)``; the rotation that turns ``W`` towards the truth is the
antisymmetric part of that batch mean. This measures, for 4 sources in 8x8 patches and 16 sources
in 16x16 patches, at ``W = W_true R`` (a random rotation of the sources):

- the reference ``E[sign(z) z^T | x_b]`` per data point by self-normalised importance sampling
  (4000 Student-t draws around the least-squares latent);
- exact kernel ridge regression of ``sign(z_n) z_n^T`` on ``x_n`` over ``N`` prior samples,
  with bandwidth and ridge chosen by leave-one-out error on the targets themselves (the
  library's ``alws.regression.select_hyperparameters``, Gaussian kernel, and the same with a
  linear part), predicted at the data;
- the same regression on the least-squares latents ``u = W^+ x`` instead of ``x`` (the best
  input a learned linear projection could give the kernel);
- the plug-in ``sign(u) u^T`` at the least-squares latent ``u = W^+ x`` (what an exact
  encoder would give; no regression).

Reported per setting: the per-point relative error of the prediction, and the cosine and
relative size of the batch mean's antisymmetric part against the reference's.

    python benchmarks/ica_regression_limit.py [--batch 200] [--sleep 1000 4000] [--seed 0]

``--seed`` draws another data batch, rotation and sleep samples (the JSON name then ends in
``_seed{S}``).
"""
from __future__ import annotations

import argparse

import torch
from torch import distributions as D

from alws.data.patches import natural_patches
from alws.evaluate import amari_distance
from alws.experiments.ica import true_mixing
from alws.kernels import make_kernel, median_heuristic
from alws.regression import ExactKRR, select_hyperparameters
from alws.seeding import seeded
from common import write

SIGMA = 0.1


def reference_moments(W: torch.Tensor, x: torch.Tensor, draws: int = 4000, seed: int = 0) -> torch.Tensor:
    """``E[sign(z) z^T | x_b]`` ``[B, K, K]`` under ``z ~ Laplace(0, 1)``, ``x ~ N(W z, SIGMA^2 I)``."""
    cov = SIGMA**2 * torch.linalg.inv(W.T @ W)
    centre = x @ torch.linalg.pinv(W).T
    scale = torch.linalg.cholesky(cov)
    proposal = D.StudentT(torch.tensor(3.0, dtype=torch.float64))
    with seeded(seed):
        t = proposal.sample((draws, *centre.shape))
    z = centre[None] + t @ scale.T
    log_w = D.Laplace(0.0, 1.0).log_prob(z).sum(-1) + D.Normal(z @ W.T, SIGMA).log_prob(x[None]).sum(-1) - proposal.log_prob(t).sum(-1)
    w = torch.softmax(log_w, 0)
    return torch.einsum("sb,sbk,sbl->bkl", w, z.sign(), z)


def antisymmetric_mean(m: torch.Tensor) -> torch.Tensor:
    a = m.mean(0)
    return (a - a.T) / 2


def compare(name: str, prediction: torch.Tensor, reference: torch.Tensor) -> dict:
    a, r = antisymmetric_mean(prediction), antisymmetric_mean(reference)
    row = {"estimate": name,
           "per_point_error": float((prediction - reference).norm() / reference.norm()),
           "rotation_cosine": float((a * r).sum() / (a.norm() * r.norm()).clamp_min(1e-300)),
           "rotation_size": float(a.norm() / r.norm())}
    print(f"  {name:42s} per-point error {row['per_point_error']:.3f}  rotation cosine {row['rotation_cosine']:+.3f}  "
          f"size {row['rotation_size']:.3f}", flush=True)
    return row


def setting(patch: int, sources: int, n_patches: int, batch: int, sleeps: list[int], seed: int = 0) -> dict:
    torch.set_default_dtype(torch.float64)
    truth = true_mixing(natural_patches(patch, n_patches, 0), sources, 0).double()
    generator = torch.Generator().manual_seed(1 + 1000 * seed)
    z = D.Laplace(0.0, 1.0).icdf(torch.rand(batch, sources, generator=generator, dtype=torch.float64).clamp(1e-7, 1 - 1e-7))
    x = z @ truth.T + SIGMA * torch.randn(batch, patch * patch, generator=generator, dtype=torch.float64)
    A = 0.12 * torch.randn(sources, sources, generator=torch.Generator().manual_seed(5 + 1000 * seed), dtype=torch.float64)
    W = truth @ torch.linalg.matrix_exp(A - A.T)
    print(f"{sources} sources in {patch}x{patch} patches: Amari(W, W_true) {amari_distance(W, truth):.3f}", flush=True)
    reference = reference_moments(W, x, seed=1000 * seed)
    rows = [compare("plug-in sign(u) u^T, u = W^+ x", (lambda u: u.sign()[:, :, None] * u[:, None, :])(x @ torch.linalg.pinv(W).T), reference)]
    for n in sleeps:
        with seeded(100 + n + 1000 * seed):
            zs = D.Laplace(0.0, 1.0).sample((n, sources)).double()
            xs = zs @ W.T + SIGMA * torch.randn(n, patch * patch)
        targets = (zs.sign()[:, :, None] * zs[:, None, :]).reshape(n, -1)
        pinv = torch.linalg.pinv(W)
        for kernel_name, inputs in (("gaussian", "x"), ("gaussian+linear", "x"), ("gaussian", "u = W^+ x")):
            kernel = make_kernel(kernel_name)
            project = (lambda v: v @ pinv.T) if inputs != "x" else (lambda v: v)
            centre = project(xs).mean(0, keepdim=True)
            xs_c, x_c = project(xs) - centre, project(x) - centre
            median = median_heuristic(torch.cat([xs_c, x_c]))
            m = min(n, 1000)  # leave-one-out selection on at most 1000 samples, absolute ridge kept
            sel = select_hyperparameters(xs_c[:m], targets[:m], kernel, [median * b for b in (0.25, 0.5, 1.0, 2.0, 4.0)],
                                         [1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
            regressor = ExactKRR(kernel).fit(xs_c, sel.bandwidth, sel.ridge * m / n)
            prediction = regressor.predict(x_c, targets).reshape(batch, sources, sources)
            row = compare(f"KRR {kernel_name} on {inputs}, N={n}", prediction, reference)
            rows.append({**row, "n_sleep": n, "inputs": inputs, "bandwidth_over_median": sel.bandwidth / median, "ridge": sel.ridge * m / n,
                         "loo_error": sel.loo_error})
    return {"patch": patch, "sources": sources, "amari": amari_distance(W, truth), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--sleep", type=int, nargs="+", default=[1000, 4000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = [setting(8, 4, 3000, args.batch, args.sleep, args.seed), setting(16, 16, 20000, args.batch, args.sleep, args.seed)]
    write("ica_regression_limit" + (f"_seed{args.seed}" if args.seed else ""), {"seed": args.seed, "settings": out})


if __name__ == "__main__":
    main()
