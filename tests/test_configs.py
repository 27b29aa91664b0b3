"""Where the zoo configs are found: $SB3_NATURAL_ZOO_CONFIGS, the installed package, the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

from sb3_natural import configs
from sb3_natural.configs import ENV_VAR, load_zoo_entry, zoo_config_dir, zoo_config_file

ROOT = Path(__file__).resolve().parents[1]


def test_checkout_configs_are_found_without_the_variable(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    found = zoo_config_dir()
    assert (found / "nac.yml").is_file()
    # an editable install or the clone: the top-level folder; an installed wheel: the package's copy
    assert found in (ROOT / "zoo_configs", Path(configs.__file__).resolve().parent / "zoo_configs")


def test_the_variable_takes_precedence(monkeypatch, tmp_path):
    (tmp_path / "nac.yml").write_text("CartPole-v1:\n  n_timesteps: 10\n  n_steps: 8\n")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert zoo_config_dir() == tmp_path
    assert load_zoo_entry("nac", "CartPole-v1") == {"n_timesteps": 10, "n_steps": 8}
    with pytest.raises(FileNotFoundError, match="no zoo config for 'reinforce'"):
        zoo_config_file("reinforce")


def test_a_variable_that_is_not_a_folder_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=ENV_VAR):
        zoo_config_dir()


def test_missing_env_entry_lists_the_entries(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(KeyError, match="CartPole-v1"):
        load_zoo_entry("nac", "NoSuchEnv-v0")


def test_train_adds_the_found_config_and_keeps_a_given_one(monkeypatch, tmp_path):
    pytest.importorskip("rl_zoo3")
    from sb3_natural.zoo import register, with_default_config

    register()
    (tmp_path / "nac.yml").write_text("CartPole-v1:\n  n_timesteps: 10\n")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    argv = with_default_config(["--algo", "nac", "--env", "CartPole-v1"])
    assert argv[-2:] == ["--conf-file", str(tmp_path / "nac.yml")]
    given = ["--algo", "nac", "--conf-file", "mine.yml"]
    assert with_default_config(given) == given
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no zoo config for 'nac'"):
        with_default_config(["--algo", "nac"])


def test_make_zoo_model_applies_normalize_and_checks_the_key(monkeypatch, tmp_path):
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_natural.registry import make_zoo_model

    (tmp_path / "nac.yml").write_text("Pendulum-v1:\n  n_timesteps: 10\n  n_steps: 8\n  normalize: true\n  n_envs: 2\n")
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    model, eval_env, n = make_zoo_model("nac", "Pendulum-v1")
    assert n == 10 and model.n_steps == 8 and model.n_envs == 2
    assert isinstance(model.get_env(), VecNormalize) and isinstance(eval_env, VecNormalize) and not eval_env.training
    with pytest.raises(ValueError, match="unknown zoo key"):
        make_zoo_model("ppo2", "Pendulum-v1")
