import json
import subprocess
import sys

import pytest

from alws.cli import main


def test_list_names_the_experiments(capsys):
    assert main(["list"]) == 0
    assert "gradient-estimation" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "no-such-experiment"], "valid: blowfly, gabor-ring, gradient-estimation, hodgkin-huxley, ica, images, images-benchmark, pinwheel"),
        (["run", "gradient-estimation", "--preset", "huge"], "valid: default, smoke"),
        (["run", "gradient-estimation", "--set", "n_pointz=3"], "valid keys: seed, device"),
        (["run", "gradient-estimation", "--set", "n_points"], "key=value"),
        (["run", "gradient-estimation", "--set", "n_points=[1,"], "does not parse"),
        (["run", "gradient-estimation", "--set", "n_points=many"], "expects an integer"),
        (["run", "gradient-estimation", "--set", "sigma_x_values=[-1]"], "positive"),
        (["run", "gradient-estimation", "--set", "estimators=[\"vae9\"]"], "valid: alws-exact"),
    ],
)
def test_bad_requests_are_refused_with_the_valid_choices(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err


def test_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["run", "gradient-estimation", "--preset", "smoke", "--set", "repeats=1", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["repeats"] == 1 and config["preset"] == "smoke"
    first = json.loads((out / "results.json").read_text())
    assert main(["report", str(out)]) == 0
    assert "alws-exact" in capsys.readouterr().out
    # a second run into the same directory is refused; resume reuses the finished stages
    assert main(args) == 2
    assert main(["resume", str(out), "--no-progress"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["settings"] == first["settings"]
    assert "reusing" in (out / "run.log").read_text()


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "alws", "list"], capture_output=True, text=True, check=True)
    assert "gradient-estimation" in result.stdout


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, capsys):
    # pytest captures stderr (not a TTY): the default must then print no bar
    assert main(["run", "gradient-estimation", "--preset", "smoke", "--set", "repeats=1", "--out", str(tmp_path / "r")]) == 0
    assert "it/s" not in capsys.readouterr().err
