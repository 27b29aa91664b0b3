"""The benchmark harness: a tiny grid end to end, killed part-way and resumed."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sb3_natural.benchmark.__main__ import main as benchmark_main
from sb3_natural.benchmark.report import (
    aggregate,
    aggregate_members,
    bootstrap_ci,
    iqm,
    markdown,
    probability_of_improvement,
    summary,
)
from sb3_natural.benchmark.runner import Run, load_result, reference_entry, run_one

ARGS = ["--suite", "quick", "--algos", "nac", "a2c", "--envs", "CartPole-v1", "--budget", "2048", "--seeds", "0", "1",
        "--eval-points", "2", "--eval-episodes", "2", "--workers", "1", "--no-progress"]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _results(out: Path) -> list[Path]:
    return sorted(out.glob("runs/*/*/*/result.json"))


def test_grid_killed_and_resumed(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "sb3_natural.benchmark", *ARGS, "--out", str(out)]
    proc = subprocess.Popen(cmd, env=ENV, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not _results(out) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = _results(out)
    assert 1 <= len(first) < 4, "the grid should be killed part-way"
    stamps = {p: p.stat().st_mtime_ns for p in first}

    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(_results(out)) == 4
    for p, stamp in stamps.items():
        assert p.stat().st_mtime_ns == stamp, f"{p} was run again"

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {(r["algo"], r["seed"]) for r in rows} == {("nac", "0"), ("nac", "1"), ("a2c", "0"), ("a2c", "1")}
    for r in rows:
        assert float(r["steps_per_s"]) > 0 and float(r["mean_update_s"]) > 0 and int(r["n_updates"]) >= 1
        assert r["zoo_entry"] == "CartPole-v1"
    report = (out / "report.md").read_text()
    assert "### CartPole-v1 (2048 steps)" in report and "| nac | 2 |" in report and "| a2c | 2 |" in report
    assert "Aggregate over envs" in report
    assert (out / "summary.md").read_text().startswith("| env (steps) | a2c | nac |")
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_relative_output_directory(tmp_path):
    """--out given relative to the working directory (as in the docs) works too."""
    cmd = [sys.executable, "-m", "sb3_natural.benchmark", "--suite", "quick", "--algos", "a2c", "--envs", "CartPole-v1",
           "--budget", "512", "--seeds", "0", "--eval-points", "1", "--eval-episodes", "1", "--workers", "1",
           "--no-progress", "--out", "rel/bench"]  # fmt: skip
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "rel/bench/runs/a2c/CartPole-v1/seed0/result.json").is_file()
    assert (tmp_path / "rel/bench/results.csv").is_file()


def test_statistics_against_hand_values():
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0, -50.0, 5.0, 6.0])
    # IQM of 8 values: mean of the middle 4 after sorting (-50, 1, 2, 3, 4, 5, 6, 100) -> 3.5
    assert float(iqm(x)) == 3.5
    lo, hi = bootstrap_ci(x, iqm)
    assert lo <= 3.5 <= hi and lo < hi
    a = np.array([[3.0], [4.0]])
    b = np.array([[1.0], [2.0]])
    assert probability_of_improvement(a, b) == 1.0
    assert probability_of_improvement(b, a) == 0.0
    assert probability_of_improvement(a, a) == 0.5


def test_summary_table_marks_best_missing_and_partial():
    def run(algo, env, seed, final):
        return {"algo": algo, "env": env, "seed": seed, "budget": 1000, "final_mean": final}

    results = [run("a", "E1", s, f) for s, f in enumerate([1.0, 2.0, 3.0, 4.0])]
    results += [run("b", "E1", s, f) for s, f in enumerate([10.0, 20.0])]
    results += [run("a", "E2", s, -5.0) for s in range(4)]
    lines = summary(results).splitlines()
    assert lines[0] == "| env (steps) | a | b |"
    # IQM of 1..4 is 2.5; b has 2 of 4 seeds, IQM 15 is the row's best
    assert lines[2] == "| E1 (1000) | 2.5 | **15.0** (2 seeds) |"
    assert lines[3] == "| E2 (1000) | **-5.0** | n/a |"


def test_one_env_at_two_budgets_gives_two_tables_and_two_rows():
    """Runs of an env at different budgets are separate tasks: never one table under one budget."""

    def run(algo, budget, final):
        return {"algo": algo, "env": "E", "seed": 0, "budget": budget, "final_mean": final, "steps_per_s": 1.0}

    results = [run("a", 200, 1.0), run("b", 200, 2.0), run("c", 30, 3.0)]
    report = markdown(results)
    short, long = report.index("### E (30 steps)"), report.index("### E (200 steps)")
    assert short < long and "| c | 1 |" in report[short:long] and "| a | 1 |" in report[long:]
    assert "| a |" not in report[short:long] and "| c |" not in report[long:]
    lines = summary(results).splitlines()
    assert lines[2:] == ["| E (30) | n/a | n/a | **3.0** |", "| E (200) | 1.0 | **2.0** | n/a |"]


def test_report_with_one_seed_has_no_interval_and_no_aggregate():
    """A bootstrap over one seed would print a zero-width CI; the report says n/a instead."""

    def run(algo, seed, final):
        return {"algo": algo, "env": "E", "seed": seed, "budget": 10, "final_mean": final, "steps_per_s": 1.0}

    one = markdown([run("a", 0, 1.0), run("ppo", 0, 2.0)])
    assert "| a | 1 | 1.0 +/- 0.0 | 1.0 [n/a: 1 seed] |" in one and "Aggregate" not in one
    two = markdown([run("a", 0, 1.0), run("a", 1, 3.0), run("ppo", 0, 2.0), run("ppo", 1, 2.0)])
    assert "| a | 2 | 2.0 +/- 1.0 | 2.0 [1.0, 3.0] |" in two and "Aggregate" in two


def _run(algo: str, env: str, seed: int, final: float) -> dict:
    """A finished run's result, as much of it as the report's aggregate reads."""
    return {"algo": algo, "env": env, "seed": seed, "budget": 10, "final_mean": final, "steps_per_s": 1.0}


def _full_grid() -> list[dict]:
    """a and ppo on E1 and E2, seeds 0-2; final = seed, plus 1 for ppo."""
    return [_run(a, e, s, float(s + (a == "ppo"))) for a in ("a", "ppo") for e in ("E1", "E2") for s in range(3)]


def test_aggregate_of_an_incomplete_grid_says_which_seeds_it_uses():
    """The aggregate keeps only the seeds every algorithm has on every env, and the report says so."""

    full = _full_grid()
    assert "Over seeds" not in markdown(full)
    partial = [r for r in full if not (r["algo"] == "ppo" and r["env"] == "E1" and r["seed"] == 2)]
    text = markdown(partial)
    assert "Over seeds 0, 1, the seeds every algorithm has finished on every env (8 of 11 runs)." in text
    # a: 0, 1 and ppo: 1, 2 on each env over seeds 0-1 -> P(a > ppo) = (0 + 0.5 + 0 + 0) / 4 per env
    assert "| a | " in text and "| 0.12 [" in text


def test_aggregate_leaves_out_an_algorithm_that_has_not_run_every_env_or_two_seeds():
    """An algorithm missing an env, or sharing one seed only, is left out and named; the rest stay."""

    full = _full_grid()
    late = [_run("b", "E2", 0, 50.0)]  # b has started: one seed on one env
    assert aggregate_members(full + late) == (["a", "ppo"], [0, 1, 2])
    text = markdown(full + late)
    assert (
        "Over seeds 0, 1, 2, the seeds every algorithm in it has finished on every env (12 of 13 runs). "
        "Left out until more of their runs finish: b." in text
    )
    assert "| b | 1 | 50.0" in text  # still in its env's table
    assert "| b | " not in text.split("### Aggregate")[1]
    # b's 50.0 still sets E2's highest score: ppo's finals 1, 2, 3 normalize to 1/3, 2/3, 1 on E1 and
    # 1/50, 2/50, 3/50 on E2; their IQM drops the lowest and highest of the six (0.667 without b)
    assert aggregate(full + late)["ppo"]["iqm"][0] == pytest.approx((2 / 50 + 3 / 50 + 1 / 3 + 2 / 3) / 4)
    # b on both envs but seed 0 only: keeping it would leave 1 shared seed, so it is still left out
    both = [*late, _run("b", "E1", 0, 50.0)]
    assert aggregate_members(full + both) == (["a", "ppo"], [0, 1, 2])
    # one seed of everything: no aggregate at all
    assert aggregate_members([r for r in full if r["seed"] == 0]) == ([], [])
    assert "Aggregate" not in markdown([r for r in full if r["seed"] == 0])


def _fake_result(out: Path, algo: str, env: str, seed: int, budget: int, final: float) -> None:
    rdir = out / "runs" / algo / env / f"seed{seed}"
    rdir.mkdir(parents=True)
    result = {"algo": algo, "env": env, "seed": seed, "budget": budget, "final_mean": final, "final_std": 0.0,
              "curve_steps": [budget // 2, budget], "curve_means": [final / 2, final], "wall_s": 1.0,
              "steps_per_s": float(budget), "mean_update_s": 0.01, "n_updates": 3}  # fmt: skip
    (rdir / "result.json").write_text(json.dumps(result))


def test_reports_cover_every_grid_in_the_folder_and_budgets_must_match(tmp_path):
    """Two grids with different envs and budgets share a folder: the report of either covers both."""
    for seed in (0, 1):
        _fake_result(tmp_path, "a2c", "CartPole-v1", seed, 1000, 100.0 + seed)
        _fake_result(tmp_path, "a2c", "Pendulum-v1", seed, 5000, -900.0 - seed)
    common = ["--suite", "quick", "--algos", "a2c", "--seeds", "0", "1", "--out", str(tmp_path), "--report-only"]
    assert benchmark_main([*common, "--envs", "CartPole-v1", "--budget", "1000"]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "### CartPole-v1 (1000 steps)" in report and "### Pendulum-v1 (5000 steps)" in report
    assert len(list(csv.DictReader((tmp_path / "results.csv").open()))) == 4
    with pytest.raises(ValueError, match="trained for 1000 steps, this grid asks 2000"):
        load_result(tmp_path, Run("a2c", "CartPole-v1", 0, 2000))


def test_reference_entry_falls_back_to_older_env_version():
    """rl-zoo3 tunes MuJoCo at v4: a v5 run of its keys uses the v4 entry; other cases are left to rl-zoo3."""
    key, entry = reference_entry("ppo", "HalfCheetah-v5")
    assert key == "HalfCheetah-v4" and entry["normalize"] is True and entry["n_epochs"] == 20
    assert reference_entry("trpo", "Hopper-v5")[0] == "Hopper-v4"
    assert reference_entry("ppo", "CartPole-v1") is None  # the file has the env itself
    assert reference_entry("nac", "HalfCheetah-v5") is None  # our keys read zoo_configs/
    assert reference_entry("ppo", "NoSuchEnv-v3") is None


def test_reference_run_on_mujoco_v5(tmp_path):
    """The fallback entry reaches rl-zoo3 through --conf-file: a v5 MuJoCo run of an rl-zoo3 key trains."""
    result = run_one(Run("a2c", "Swimmer-v5", 0, 256), tmp_path, eval_points=1, eval_episodes=1)
    assert result["zoo_entry"] == "Swimmer-v4" and np.isfinite(result["final_mean"])
    conf = (tmp_path / "runs/a2c/Swimmer-v5/seed0/zoo_config.yml").read_text()
    assert conf.startswith("Swimmer-v5:")


def test_flush_denormal_reaches_every_training_command_and_the_result(tmp_path, monkeypatch):
    """The CLI's --flush-denormal is passed to each run's train command and recorded in results.csv."""
    from sb3_natural.benchmark import runner

    commands: list[list[str]] = []

    def fake_train(cmd, cwd, **kwargs):  # writes what a real run leaves behind
        commands.append(cmd)
        logs = Path(cmd[cmd.index("-f") + 1]) / cmd[cmd.index("--algo") + 1] / f"{cmd[cmd.index('--env') + 1]}_1"
        logs.mkdir(parents=True)
        np.savez(logs / "evaluations.npz", timesteps=np.array([512, 1024]), results=np.array([[1.0, 3.0], [5.0, 7.0]]))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(runner.subprocess, "run", fake_train)
    args = ["--suite", "quick", "--algos", "nac", "a2c", "--envs", "CartPole-v1", "--budget", "1024", "--seeds", "0",
            "--workers", "1", "--no-progress", "--out", str(tmp_path / "on")]  # fmt: skip
    assert benchmark_main([*args, "--flush-denormal"]) == 0
    assert len(commands) == 2 and all(c[-1] == "--flush-denormal" for c in commands)
    rows = list(csv.DictReader((tmp_path / "on" / "results.csv").open()))
    assert [r["flush_denormal"] for r in rows] == ["True", "True"] and {r["final_mean"] for r in rows} == {"6.0"}

    commands.clear()
    assert benchmark_main([*args[:-1], str(tmp_path / "off")]) == 0
    assert len(commands) == 2 and not any("--flush-denormal" in c for c in commands)
    rows = list(csv.DictReader((tmp_path / "off" / "results.csv").open()))
    assert [r["flush_denormal"] for r in rows] == ["False", "False"]


def test_relative_zoo_config_folder_reaches_the_runs(tmp_path, monkeypatch):
    """$SB3_NATURAL_ZOO_CONFIGS relative to where the harness is started: each run starts in its own
    folder, so the harness hands it the absolute path (a real run reads the copied config)."""
    import shutil

    from sb3_natural.configs import zoo_config_file

    confs = tmp_path / "confs"
    confs.mkdir()
    entry = zoo_config_file("nac").read_text().replace("n_steps: 1024", "n_steps: 64", 1)  # CartPole's entry
    (confs / "nac.yml").write_text(entry)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SB3_NATURAL_ZOO_CONFIGS", "confs")
    args = ["--suite", "quick", "--algos", "nac", "--envs", "CartPole-v1", "--budget", "256", "--seeds", "0",
            "--workers", "1", "--no-progress", "--out", "out", "--eval-points", "2"]  # fmt: skip
    assert benchmark_main(args) == 0
    result = load_result(tmp_path / "out", Run("nac", "CartPole-v1", 0, 256))
    assert result is not None and result["n_updates"] >= 3  # rollouts of 64 (the copy), not 1024 (at most 1 update)
    shutil.rmtree(confs)  # and the folder really is the one read: without it the run fails, naming it
    assert benchmark_main([*args[:-3], "out2", *args[-2:]]) != 0
    error = (tmp_path / "out2" / "runs" / "nac" / "CartPole-v1" / "seed0" / "error.txt").read_text()
    assert str(confs) in error


def test_update_timer_counts_only_rollouts_followed_by_train():
    """Off-policy: no train() before learning_starts, so those rollouts must not dilute the mean."""
    import gymnasium as gym
    from stable_baselines3 import A2C, TD3

    from sb3_natural.benchmark.callbacks import UpdateTimer

    timer = UpdateTimer()
    TD3("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=50, seed=0).learn(80, callback=timer)
    # train() runs after steps 51..80; the last one is not followed by a rollout start
    assert len(timer.durations) == 29 and min(timer.durations) > 0
    timer = UpdateTimer()
    A2C("MlpPolicy", gym.make("CartPole-v1"), n_steps=5, seed=0).learn(50, callback=timer)
    assert len(timer.durations) == 9


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algos", "bogus", "nac"], "--algos ['bogus'] are not rl-zoo3 algorithm keys; available: a2c,"),
        (["--workers", "0"], "--workers must be >= 1, got 0"),
        (["--budget", "-5"], "--budget must be >= 1, got -5"),
        (["--seeds", "0", "-1"], "--seeds must be >= 0"),
        (["--eval-points", "0"], "--eval-points must be >= 1"),
        (["--eval-episodes", "0"], "--eval-episodes must be >= 1"),
        (["--slurm-jobs", "0"], "--slurm-jobs must be >= 1"),
    ],
)
def test_bad_command_line_values_are_refused_before_any_run(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        benchmark_main([*argv, "--suite", "quick", "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # no run was started


def test_other_zoo_keys_are_accepted_by_algos(tmp_path):
    # sb3's and sb3-contrib's keys through rl-zoo3 (the --algos help says so): nothing to report yet
    assert benchmark_main(["--algos", "sac", "nac", "--suite", "quick", "--report-only", "--out", str(tmp_path)]) == 0
