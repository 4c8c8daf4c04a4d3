"""The README's quickstart is executed here, so it cannot rot."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_each_run_on_their_own():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2, "README.md should hold the quickstart and the Pyro example"
    spaces = []
    for block in blocks:
        namespace = {"__name__": "readme"}  # a fresh namespace: a block may not lean on an earlier one
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
        spaces.append(namespace)
    quickstart = next(ns for ns in spaces if "history" in ns)
    assert quickstart["history"][-1]["step"] == quickstart["STEPS"]
    pyro_block = next(ns for ns in spaces if "pyro_model" in ns)
    import pyro

    locs = sorted(pyro.param("locs").tolist())  # the param store holds the learned values
    assert locs[0] < -1.5 and locs[1] > 2.5
    assert sorted(pyro_block["pyro_model"].constrained()["locs"].tolist()) == locs


def test_readme_and_ci_agree_on_the_test_command():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in text and "make test" in ci
