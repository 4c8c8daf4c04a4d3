"""Benchmark: what kernel learning adds to an ALWS step.

For a small MLP decoder (8-D latent, 32-D x) and the image model (16-D latent, 784 pixels;
Bernoulli, and Gaussian with a bounded mean), the mean wall time of a training step (``alws.fit``, steps 6 onwards; the first step
holds the warm-up and the selection) for

- ``fixed``: the same learned-projection feature map, not trained (``learn_kernel=False``): the
  step without kernel learning;
- ``learned``: the default schedule (one Adam step on ``2 * kernel_samples`` fresh sleep samples
  every second step);
- ``learned every step / every 4``: an update every step / every fourth step;
- ``raw``: no feature map (the kernel on raw ``x``), for reference.

Target: ``learned / fixed <= 1.5`` at the default schedule.

    python benchmarks/kernel_learning.py [--sizes 500 1000 2000] [--steps 40] [--device cpu]
"""
from __future__ import annotations

import argparse
import statistics

import torch

import alws
from alws.models import ImageModel
from common import MLPGenerator, write

VARIANTS = {
    "raw": dict(features="none"),
    "fixed": dict(features="linear", learn_kernel=False),
    "learned": dict(features="linear"),  # the default schedule
    "learned every step": dict(features="linear", kernel_every=1),
    "learned every 4": dict(features="linear", kernel_every=4),
}


def models(device):
    torch.manual_seed(0)
    yield "mlp decoder (32-D x)", MLPGenerator().to(device)
    torch.manual_seed(0)
    yield "image model (784 pixels, Bernoulli)", ImageModel((1, 28, 28), 16, "bernoulli", "mlp", 256).to(device)
    torch.manual_seed(0)
    # real-valued pixels: kernel_objective="auto" takes the log-likelihood objective, which scores every
    # one of the 1 + 2 x 784 statistics' columns (the Bernoulli model's targets: at most 256)
    yield "image model (784 pixels, Gaussian, mean in [0, 1])", ImageModel((1, 28, 28), 16, "gaussian", "mlp", 256, mean_range=(0.0, 1.0)).to(device)


def mean_step(model_factory, n: int, steps: int, device: str, **options) -> float:
    model = model_factory()
    with torch.no_grad():
        data = model.sample(200)[1]
    history = alws.fit(model, data, steps=steps, batch_size=100, n_sleep=n, lr=1e-4, seed=0, progress=False, regression="exact",
                       select_every=0, **options)
    return statistics.fmean(record["time"] for record in history[5:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = []
    for name, model in models(args.device):
        state = {k: v.clone() for k, v in model.state_dict().items()}

        def factory(model=model, state=state):
            model.load_state_dict(state)
            return model

        for n in args.sizes:
            times = {variant: mean_step(factory, n, args.steps, args.device, **options) for variant, options in VARIANTS.items()}
            row = {"model": name, "n_sleep": n, "mean_step_s": times, "learned_over_fixed": times["learned"] / times["fixed"],
                   "learned_over_raw": times["learned"] / times["raw"]}
            rows.append(row)
            print(f"{name}, N={n}: " + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in times.items())
                  + f"; learned/fixed {row['learned_over_fixed']:.2f}")
    write(f"kernel_learning_{args.device.replace(':', '')}", {"target_learned_over_fixed": 1.5, "device": args.device, "rows": rows,
                                                              "max_learned_over_fixed": max(r["learned_over_fixed"] for r in rows)})


if __name__ == "__main__":
    main()
