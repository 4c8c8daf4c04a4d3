"""Command line: ``alws list | run | resume | report | plot``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ALWSError, ConfigError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alws", description="Amortised learning by wake-sleep: experiments and tools")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments and their presets")
    run = sub.add_parser("run", help="run an experiment into a run directory")
    run.add_argument("name", help="experiment name (see 'alws list')")
    run.add_argument("--preset", default="default", help="preset name, e.g. smoke (default: default)")
    run.add_argument("--config", type=Path, help="JSON file of config keys (a run's config.json works too)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one config key (JSON value); repeatable")
    run.add_argument("--out", type=Path, help="run directory (default: runs/NAME-TIMESTAMP)")
    run.add_argument("--seed", type=int, help="random seed")
    run.add_argument("--device", help="cpu or cuda[:k]")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    resume = sub.add_parser("resume", help="continue an interrupted run from its checkpoints")
    resume.add_argument("dir", type=Path)
    resume.add_argument("--no-progress", action="store_true")
    report = sub.add_parser("report", help="print the results table of a finished run")
    report.add_argument("dir", type=Path)
    report.add_argument("--plot", action="store_true", help="also draw the training curves (as 'alws plot')")
    plot = sub.add_parser("plot", help="draw the training curves of a run, finished or not (DIR/training_curves.png)")
    plot.add_argument("dir", type=Path)
    plot.add_argument("--out", type=Path, help="image file (default: DIR/training_curves.png)")
    return parser


def _list() -> None:
    from .experiments.registry import EXPERIMENTS, describe

    for name in sorted(EXPERIMENTS):
        description, presets = describe(name)
        print(f"{name:<24} {description}  [presets: {', '.join(presets)}]")


def _report(results: dict, path: Path) -> str:
    from .experiments.base import load_experiment

    if "experiment" not in results:
        raise ConfigError(f"{path} has no 'experiment' entry: it is not an alws results file (or it was edited)")
    module = load_experiment(results["experiment"])
    if hasattr(module, "report"):
        try:
            return module.report(results)
        except (KeyError, TypeError, IndexError) as error:
            raise ConfigError(f"{path} lacks what the {results['experiment']} report needs ({error!r}): a truncated or "
                              "edited results file") from None
    return json.dumps({k: v for k, v in results.items() if k != "config"}, indent=1)


def _failures(results: dict, out: Path) -> int:
    failures = results.get("failures") or []
    if not failures:
        return 0
    names = ", ".join(f"{f['method']} ({f['status']} at step {f.get('step')})" for f in failures)
    print(f"alws: finished with {len(failures)} failed method(s): {names}; the others' results are in {out / 'results.json'}",
          file=sys.stderr)
    return 3


def main(argv=None) -> int:
    """Run the command line; returns the exit status: 0 done, 2 refused (an error message says
    why), 3 finished but some method of the experiment diverged, 130 interrupted."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            _list()
            return 0
        if args.command == "plot" or (args.command == "report" and args.plot):
            from .curves import plot_run

            print(f"training curves: {plot_run(args.dir, getattr(args, 'out', None))}")
            if args.command == "plot":
                return 0
        if args.command == "report":
            from .experiments.base import read_json

            path = args.dir / "results.json"
            if not path.exists():
                raise ConfigError(f"{args.dir} holds no results.json (unfinished run? try 'alws resume {args.dir}')")
            print(_report(read_json(path, "the run's results"), path))
            return 0
        from .experiments.base import resume_experiment, run_experiment

        progress = False if args.no_progress else None
        if args.command == "run":
            results, out = run_experiment(args.name, args.preset, args.config, args.overrides, args.out, args.seed, args.device, progress)
        else:
            results, out = resume_experiment(args.dir, progress)
        print(f"results: {out / 'results.json'}", file=sys.stderr)
        return _failures(results, out)
    except ALWSError as error:
        print(f"alws: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        where = getattr(interrupt, "out_dir", None)
        print(f"alws: interrupted; continue with 'alws resume {where}'" if where else "alws: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
