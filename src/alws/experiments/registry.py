"""The experiments by name, readable without importing them (or torch): ``alws list`` and
``alws --help`` stay fast."""
from __future__ import annotations

import ast
import importlib.util

__all__ = ["EXPERIMENTS", "describe"]

#: Experiment name -> module under ``alws.experiments``.
EXPERIMENTS = {
    "gradient-estimation": "gradient_estimation",
    "blowfly": "blowfly",
    "hodgkin-huxley": "hodgkin_huxley",
    "gabor-ring": "gabor_ring",
    "pinwheel": "pinwheel",
    "ica": "ica",
    "images": "images",
    "images-benchmark": "images_benchmark",
}


def describe(name: str) -> tuple[str, list[str]]:
    """``(DESCRIPTION, preset names)`` of experiment ``name``, read from its source file's module-level
    ``DESCRIPTION = "..."`` and ``PRESETS = {...}`` without running it."""
    spec = importlib.util.find_spec(f"alws.experiments.{EXPERIMENTS[name]}")
    with open(spec.origin, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    description, presets = "", ["default"]
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target = node.targets[0].id
            if target == "DESCRIPTION" and isinstance(node.value, ast.Constant):
                description = node.value.value
            elif target == "PRESETS" and isinstance(node.value, ast.Dict):
                presets += [key.value for key in node.value.keys if isinstance(key, ast.Constant)]
    return description, presets
