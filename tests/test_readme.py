"""The README's quickstart is executed here, so it cannot rot."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 2, "README.md should hold the quickstart and the Pyro example"
    namespace = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
    assert namespace["history"][-1]["step"] == namespace["STEPS"]
    locs = sorted(namespace["pyro_model"].unconstrained["locs"].tolist())
    assert locs[0] < -1.5 and locs[1] > 2.5


def test_readme_and_ci_agree_on_the_test_command():
    text = README.read_text()
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in text and "make test" in ci
