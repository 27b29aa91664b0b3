"""rl-zoo3 integration: train/enjoy/optimize every key through `python -m sb3_natural.train`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sb3_natural.zoo import ZOO_ALGOS, with_default_config

ROOT = Path(__file__).resolve().parents[1]
ENV_OF = {
    "ddpg_ig": "Pendulum-v1",
    "td3_ig": "Pendulum-v1",
    "td3_ig_tanh": "Pendulum-v1",
}  # continuous actions; the others run on CartPole
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
# A short random-sampler Optuna study: one evaluation of 2 episodes per trial.
OPTIMIZE = ["-n", "1024", "-optimize", "--n-jobs", "1", "--sampler", "random", "--pruner", "none",
            "--n-evaluations", "1", "--eval-episodes", "2", "--n-trials", "2"]  # fmt: skip


def run(module: str, *args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=ENV
    )


@pytest.mark.parametrize("algo", sorted(ZOO_ALGOS))
def test_train_then_enjoy(algo, tmp_path):
    env_id = ENV_OF.get(algo, "CartPole-v1")
    args = ["--algo", algo, "--env", env_id, "-n", "1024", "--seed", "0", "-f", str(tmp_path / "logs")]
    proc = run("sb3_natural.train", *args, "--eval-freq", "512", "--eval-episodes", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "logs" / algo / f"{env_id}_1"
    for name in (f"{env_id}.zip", "evaluations.npz", "0.monitor.csv", f"{env_id}/config.yml", f"{env_id}/args.yml"):
        assert (run_dir / name).is_file(), name
    config = (run_dir / env_id / "config.yml").read_text()
    assert any(k in config for k in ("n_steps", "n_episodes", "action_grad_transform"))  # our zoo_configs entry was used
    proc = run("sb3_natural.enjoy", "--algo", algo, "--env", env_id, "-f", str(tmp_path / "logs"), "-n", "200",
               "--no-render", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Episode" in proc.stdout or "Atari" in proc.stdout or proc.stdout.strip()


@pytest.mark.parametrize("algo", sorted(ZOO_ALGOS))
def test_optimize_two_trials_sqlite(algo, tmp_path):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env_id = ENV_OF.get(algo, "CartPole-v1")
    args = ["--algo", algo, "--env", env_id, *OPTIMIZE, "--storage", storage, "--study-name", "s", "--seed", "0"]
    proc = run("sb3_natural.train", *args, "-f", str(tmp_path / "logs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="s", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2


def _storage(kind: str, tmp_path: Path) -> tuple[str, object]:
    """The --storage argument and the matching Optuna storage: a JournalStorage file (``*.log``,
    rl-zoo3's recommended default for several processes, also on a shared file system) or an RDB URL."""
    import optuna

    if kind == "journal":
        path = str(tmp_path / "shared.log")
        return path, optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    return url, url


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_one_study(kind, tmp_path):
    import optuna

    storage, optuna_storage = _storage(kind, tmp_path)
    optuna.create_study(study_name="shared", storage=optuna_storage, direction="maximize")
    args = ["--algo", "nac", "--env", "CartPole-v1", *OPTIMIZE, "--storage", storage, "--study-name", "shared"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "sb3_natural.train", *args, "-f", str(tmp_path / f"w{i}"), "--seed", str(i)],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=optuna_storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    # Each worker runs exactly --n-trials 2 in the shared study: 4 complete trials means both contributed.
    assert len(complete) == 4
    for i in range(2):
        assert list((tmp_path / f"w{i}" / "nac").glob("report_CartPole-v1_*.csv")), f"worker {i} wrote no report"


def test_unknown_algorithm_key():
    from sb3_natural.zoo import register

    register()
    with pytest.raises(SystemExit, match="unknown algorithm 'natural_ppo'"):
        with_default_config(["--algo", "natural_ppo", "--env", "CartPole-v1"])


def test_default_config_added_only_for_our_keys():
    from sb3_natural.zoo import register

    register()
    argv = with_default_config(["--algo", "nac", "--env", "CartPole-v1"])
    assert argv[-2] == "--conf-file" and argv[-1].endswith("zoo_configs/nac.yml")
    assert with_default_config(["--algo", "ppo", "--env", "CartPole-v1"]) == ["--algo", "ppo", "--env", "CartPole-v1"]
    custom = ["--algo", "nac", "--conf-file", "my.yml"]
    assert with_default_config(custom) == custom


def test_missing_env_entry_and_malformed_value(tmp_path):
    conf = tmp_path / "nac.yml"
    conf.write_text("CartPole-v1:\n  policy: 'MlpPolicy'\n  n_timesteps: 1000\n  solver: 'magic'\n")
    bad = run("sb3_natural.train", "--algo", "nac", "--env", "Acrobot-v1", "-n", "100", "--conf-file", str(conf),
              "-f", str(tmp_path / "l"), cwd=tmp_path)  # fmt: skip
    assert bad.returncode != 0
    assert "Hyperparameters not found for nac-Acrobot-v1" in bad.stderr
    bad = run("sb3_natural.train", "--algo", "nac", "--env", "CartPole-v1", "-n", "100", "--conf-file", str(conf),
              "-f", str(tmp_path / "l"), cwd=tmp_path)  # fmt: skip
    assert bad.returncode != 0
    assert "solver must be one of" in bad.stderr


def test_every_zoo_config_builds_a_model():
    """Each entry of our YAML files constructs its algorithm (catches typos in argument names)."""
    import yaml
    from rl_zoo3.utils import linear_schedule  # noqa: F401  (schedules are strings rl-zoo3 converts)

    from sb3_natural.configs import zoo_config_dir

    known_zoo_keys = {
        "n_envs",
        "n_timesteps",
        "policy",
        "normalize",
        "env_wrapper",
        "frame_stack",
        "callback",
        "noise_type",
        "noise_std",
    }
    for algo, cls in ZOO_ALGOS.items():
        entries = yaml.safe_load((zoo_config_dir() / f"{algo}.yml").read_text())
        assert "default" in entries and ENV_OF.get(algo, "CartPole-v1") in entries
        import inspect

        params = set(inspect.signature(cls.__init__).parameters)
        for base in cls.__mro__[1:]:  # TD3/DDPG take SB3's arguments through **kwargs
            if "__init__" in vars(base):
                params |= set(inspect.signature(base.__init__).parameters)
        for env_id, hp in entries.items():
            unknown = set(hp) - known_zoo_keys - params
            assert not unknown, f"{algo}.yml {env_id}: unknown arguments {unknown}"


def test_yaml_values_as_rl_zoo_produces_them(tmp_path):
    """A lin_ schedule for learning_rate, a policy_kwargs string and normalize settings are accepted."""
    conf = tmp_path / "reinforce.yml"
    conf.write_text(
        "CartPole-v1:\n  policy: 'MlpPolicy'\n  n_timesteps: 600\n  n_episodes: 2\n  learning_rate: lin_1e-3\n"
        '  policy_kwargs: "dict(net_arch=[16], activation_fn=nn.ReLU)"\n'
        "  normalize: \"{'norm_obs': True, 'norm_reward': False}\"\n"
    )
    proc = run("sb3_natural.train", "--algo", "reinforce", "--env", "CartPole-v1", "--conf-file", str(conf),
               "-f", str(tmp_path / "l"), "--seed", "0", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "l" / "reinforce" / "CartPole-v1_1"
    assert (run_dir / "CartPole-v1" / "vecnormalize.pkl").is_file()
    from sb3_natural import REINFORCE

    model = REINFORCE.load(run_dir / "CartPole-v1.zip")
    assert model.policy.net_arch == [16]
    assert model.lr_schedule(1.0) == pytest.approx(1e-3) and model.lr_schedule(0.5) == pytest.approx(5e-4)


def test_flush_denormal_flag_is_ours_and_stripped(monkeypatch):
    """--flush-denormal turns flushing on and never reaches rl-zoo3's parser (which would reject it)."""
    import rl_zoo3.train
    import torch as th

    from sb3_natural.zoo import run_zoo

    seen: dict[str, object] = {}
    monkeypatch.setattr(rl_zoo3.train, "train", lambda: seen.setdefault("argv", list(sys.argv)))
    monkeypatch.setattr(th, "set_flush_denormal", lambda on: seen.setdefault("flush", on))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    run_zoo("train", ["--algo", "td3_ig", "--env", "Pendulum-v1", "--flush-denormal", "-n", "10"])
    assert seen["flush"] is True
    assert "--flush-denormal" not in seen["argv"] and seen["argv"][1:5] == ["--algo", "td3_ig", "--env", "Pendulum-v1"]
    seen.clear()
    run_zoo("train", ["--algo", "ppo", "--env", "Pendulum-v1"])
    assert "flush" not in seen


def test_every_env_entry_states_what_was_measured():
    """Each env entry's comment gives the budget it was measured at (e.g. "300k steps"), or says "not benchmarked yet"."""
    import re

    from sb3_natural.configs import zoo_config_dir

    measured = re.compile(r"\b\d+(\.\d+)?[kM]\b|\d+ steps|not benchmarked yet")
    missing = []
    for algo in ZOO_ALGOS:
        lines = (zoo_config_dir() / f"{algo}.yml").read_text().splitlines()
        for i, line in enumerate(lines):
            key = re.match(r"([A-Za-z][\w-]*):", line)
            if key is None or key.group(1) == "default":
                continue
            comment = []
            for following in lines[i + 1 :]:
                if not following.lstrip().startswith("#"):
                    break
                comment.append(following.strip())
            text = " ".join(comment)
            if not measured.search(text):
                missing.append(f"{algo}.yml {key.group(1)}: {text!r}")
    assert not missing, "entries whose comment gives no budget (nor 'not benchmarked yet'):\n" + "\n".join(missing)
