"""Benchmark: does each data point's wake estimate stay within the range of the sleep samples' values?

For a data point ``x*_b`` the wake weights ``A_nb`` average the table ``l_nb = T_n . S(x*_b)`` (on the
fast path ``log p(x*_b | z_n)`` up to terms constant in ``n``). A posterior average cannot exceed
the best value, but signed kernel ridge weights can: the estimate then rises when the samples of
negative weight fit the data worse, and training can run away (docs/results.md, "A bound on the
wake estimate"). This trains the images experiment's ``alws-learned`` method (its model, data and
settings; ``--set KEY=JSON`` overrides any config key) and records at every step: the share of
data points whose estimate is above every sample's value, the mean excess over the best sample,
the estimate, the spread of ``l_nb`` over the samples, the mean ``sum_n |A_nb|``, the ridge, the
loss, and (every ``--every-steps``) the FID on 1000 samples.

    python benchmarks/wake_estimate_range.py --set select_max=1000 --set 'bandwidth_grid=[1.0]' --set 'weights="krr"' --steps 900

Writes ``results/wake_estimate_range_NAME.json`` (``NAME`` defaults to dataset and seed).
"""
from __future__ import annotations

import argparse
import dataclasses

import torch

import alws
from alws.experiments import images
from alws.learner import ALWSObjective
from alws.objective import TrainOptions
from alws.training import StopTraining
from common import write
from fid_over_training import image_run


class RangeLogged(ALWSObjective):
    """:class:`alws.learner.ALWSObjective` whose learner also logs the range statistics of each step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows: list[dict] = []

    def prepare(self, data):
        out = super().prepare(data)
        learner, seen = self.learner, {}
        prepare, targets, loss = learner.prepare, learner.targets, learner.loss

        def prepare_and_keep(x_wake):
            result = prepare(x_wake)
            seen["phi_wake"], seen["x_wake"] = result[2], x_wake
            return result

        def targets_and_keep(z, x):
            seen["t"] = targets(z, x)
            return seen["t"]

        def loss_and_log(x_wake):
            value, record = loss(x_wake)
            with torch.no_grad():
                s = learner.statistics(seen["x_wake"])
                table = learner._estimand_table(None, None, s, seen["t"])
                eye = torch.eye(s.shape[0], dtype=torch.float64, device=s.device)
                a = learner.regressor.weights(seen["phi_wake"], eye).double()
                estimate, best = (a * table).sum(0), table.max(0).values
                self.rows.append({
                    "step": learner.calls, "ridge": record["ridge"], "loss": record["loss"],
                    "share_above_best": float((estimate > best).double().mean()),
                    "mean_excess": float((estimate - best).mean()), "estimate": float(estimate.mean()),
                    "spread": float((best - table.min(0).values).mean()), "l1": float(a.abs().sum(0).mean()),
                    "bounded_share": record.get("bounded_share"),
                })
            return value, record

        learner.prepare, learner.targets, learner.loss = prepare_and_keep, targets_and_keep, loss_and_log
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--every-steps", type=int, default=25, help="steps between FID scores")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="an images-experiment config key")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    run = image_run(args.seed, args.set)
    config = run.config
    scores = []

    def score(step: int, record: dict) -> None:
        if step % args.every_steps == 0:
            scores.append({"step": step, "fid": run.score()})
            row = objective.rows[-1]
            print(f"step {step:5d}  FID {scores[-1]['fid']:8.3f}  above best {row['share_above_best']:.2f}  "
                  f"excess {row['mean_excess']:10.1f}  spread {row['spread']:10.1f}", flush=True)
        if step >= args.steps:
            raise StopTraining()

    objective = RangeLogged(run.model, **images.alws_fit_options(config, run.likelihood))
    alws.fit(objective, run.train.images, TrainOptions(steps=args.steps, batch_size=config.batch_size, lr=config.alws_lr,
                                                      seed=config.seed, callbacks=[score], progress=False))
    name = args.name or f"{config.dataset}_seed{config.seed}"
    write(f"wake_estimate_range_{name}", {"config": dataclasses.asdict(config), "fid": scores, "steps": objective.rows})


if __name__ == "__main__":
    main()
