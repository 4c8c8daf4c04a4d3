"""Command line: ``alws list | run | resume | report``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import ALWSError

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
    return parser


def _list() -> None:
    from .experiments.base import EXPERIMENTS, load_experiment

    for name in sorted(EXPERIMENTS):
        module = load_experiment(name)
        presets = ", ".join(["default", *getattr(module, "PRESETS", {})])
        print(f"{name:<24} {module.DESCRIPTION}  [presets: {presets}]")


def _report(results: dict) -> str:
    from .experiments.base import load_experiment

    module = load_experiment(results["experiment"])
    if hasattr(module, "report"):
        return module.report(results)
    return json.dumps({k: v for k, v in results.items() if k != "config"}, indent=1)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            _list()
            return 0
        if args.command == "report":
            path = args.dir / "results.json"
            if not path.exists():
                raise ALWSError(f"{args.dir} holds no results.json (unfinished run? try 'alws resume {args.dir}')")
            print(_report(json.loads(path.read_text())))
            return 0
        from .experiments.base import resume_experiment, run_experiment

        progress = False if args.no_progress else None
        if args.command == "run":
            _, out = run_experiment(args.name, args.preset, args.config, args.overrides, args.out, args.seed, args.device, progress)
        else:
            _, out = resume_experiment(args.dir, progress)
        print(f"results: {out / 'results.json'}", file=sys.stderr)
        return 0
    except ALWSError as error:
        print(f"alws: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alws: interrupted; continue with 'alws resume DIR'", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
