"""Optuna search spaces of this package's algorithms for ``python -m sb3_natural.train ... -optimize``.

Each key has a sampler ``(trial, n_actions, n_envs, additional_args) -> hyperparameters`` and a converter
from the stored trial parameters back to hyperparameters (rl-zoo3's ``HYPERPARAMS_SAMPLER`` and
``HYPERPARAMS_CONVERTER`` contracts); :mod:`sb3_natural.registry` pairs them with the classes.
"""

from __future__ import annotations

from typing import Any

from torch import nn

_NET_ARCH = {
    "tiny": {"pi": [64], "vf": [64]},
    "small": {"pi": [64, 64], "vf": [64, 64]},
    "medium": {"pi": [256, 256], "vf": [256, 256]},
}
_ACTIVATION = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _policy_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    return {"net_arch": _NET_ARCH[raw["net_arch"]], "activation_fn": _ACTIVATION[raw["activation_fn"]]}


def convert_nac_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Optuna trial parameters -> NAC hyperparameters."""
    return {
        "n_steps": 2 ** raw["n_steps_pow"],
        "batch_size": 2 ** raw["batch_size_pow"],
        "gamma": 1 - raw["one_minus_gamma"],
        "gae_lambda": 1 - raw["one_minus_gae_lambda"],
        "solver": raw["solver"],
        "ridge": raw["ridge"],
        "target_kl": raw["target_kl"],
        "n_critic_updates": raw["n_critic_updates"],
        "policy_kwargs": _policy_kwargs(raw),
    }


def sample_nac_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space of NAC: solver, ridge (damping), target_kl, n_steps, gae_lambda, critic epochs."""
    raw = {
        "n_steps_pow": trial.suggest_int("n_steps_pow", 8, 11),
        "batch_size_pow": trial.suggest_int("batch_size_pow", 5, 8),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True),
        "one_minus_gae_lambda": trial.suggest_float("one_minus_gae_lambda", 0.001, 0.1, log=True),
        "solver": trial.suggest_categorical("solver", ["lstsq", "cg"]),
        "ridge": trial.suggest_float("ridge", 1e-4, 1.0, log=True),
        "target_kl": trial.suggest_float("target_kl", 0.002, 0.05, log=True),
        "n_critic_updates": trial.suggest_int("n_critic_updates", 5, 20),
        "net_arch": trial.suggest_categorical("net_arch", ["tiny", "small"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }
    return convert_nac_params(raw)


def convert_acktr_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Optuna trial parameters -> ACKTR hyperparameters."""
    return {
        "n_steps": 2 ** raw["n_steps_pow"],
        "gamma": 1 - raw["one_minus_gamma"],
        "gae_lambda": 1 - raw["one_minus_gae_lambda"],
        "learning_rate": raw["learning_rate"],
        "target_kl": raw["target_kl"],
        "momentum": raw["momentum"],
        "ent_coef": raw["ent_coef"],
        "kfac_damping": raw["kfac_damping"],
        "fisher": raw["fisher"],
        "policy_kwargs": _policy_kwargs(raw),
    }


def sample_acktr_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space of ACKTR: rollout length, eta_max, the trust region, momentum, damping, entropy."""
    raw = {
        "n_steps_pow": trial.suggest_int("n_steps_pow", 3, 8),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True),
        "one_minus_gae_lambda": trial.suggest_float("one_minus_gae_lambda", 0.001, 0.1, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 1.0, log=True),
        "target_kl": trial.suggest_float("target_kl", 1e-4, 0.05, log=True),
        "momentum": trial.suggest_categorical("momentum", [0.0, 0.5, 0.9]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.01, log=True),
        "kfac_damping": trial.suggest_float("kfac_damping", 1e-4, 0.1, log=True),
        "fisher": trial.suggest_categorical("fisher", ["exact", "sample"]),
        "net_arch": trial.suggest_categorical("net_arch", ["tiny", "small"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }
    return convert_acktr_params(raw)


def convert_fisher_trpo_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Optuna trial parameters -> FisherTRPO hyperparameters."""
    return {
        "n_steps": 2 ** raw["n_steps_pow"],
        "batch_size": 2 ** raw["batch_size_pow"],
        "gamma": 1 - raw["one_minus_gamma"],
        "gae_lambda": 1 - raw["one_minus_gae_lambda"],
        "learning_rate": raw["learning_rate"],
        "n_critic_updates": raw["n_critic_updates"],
        "cg_max_steps": raw["cg_max_steps"],
        "cg_damping": raw["cg_damping"],
        "target_kl": raw["target_kl"],
        "policy_kwargs": _policy_kwargs(raw),
    }


def sample_fisher_trpo_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space of FisherTRPO: damping, target_kl, CG steps, n_steps, gae_lambda, critic."""
    raw = {
        "n_steps_pow": trial.suggest_int("n_steps_pow", 8, 12),
        "batch_size_pow": trial.suggest_int("batch_size_pow", 5, 10),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True),
        "one_minus_gae_lambda": trial.suggest_float("one_minus_gae_lambda", 0.001, 0.1, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 1e-5, 0.002, log=True),
        "n_critic_updates": trial.suggest_int("n_critic_updates", 5, 30),
        "cg_max_steps": trial.suggest_int("cg_max_steps", 5, 30),
        "cg_damping": trial.suggest_float("cg_damping", 1e-3, 0.5, log=True),
        "target_kl": trial.suggest_float("target_kl", 0.001, 0.1, log=True),
        "net_arch": trial.suggest_categorical("net_arch", ["small", "medium"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }
    return convert_fisher_trpo_params(raw)


def convert_reinforce_params(raw: dict[str, Any]) -> dict[str, Any]:
    """Optuna trial parameters -> REINFORCE hyperparameters."""
    return {
        "learning_rate": raw["learning_rate"],
        "n_episodes": raw["n_episodes"],
        "gamma": 1 - raw["one_minus_gamma"],
        "baseline": None if raw["baseline"] == "none" else raw["baseline"],
        "normalize_returns": raw["normalize_returns"],
        "ent_coef": raw["ent_coef"],
        "policy_kwargs": _policy_kwargs(raw),
    }


def sample_reinforce_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """Optuna search space of REINFORCE: learning rate, episodes per update, baseline, normalization."""
    raw = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
        "n_episodes": trial.suggest_int("n_episodes", 1, 32, log=True),
        "one_minus_gamma": trial.suggest_float("one_minus_gamma", 0.0001, 0.03, log=True),
        "baseline": trial.suggest_categorical("baseline", ["none", "mean", "value"]),
        "normalize_returns": trial.suggest_categorical("normalize_returns", [False, True]),
        "ent_coef": trial.suggest_float("ent_coef", 1e-8, 0.01, log=True),
        "net_arch": trial.suggest_categorical("net_arch", ["tiny", "small"]),
        "activation_fn": trial.suggest_categorical("activation_fn", ["tanh", "relu"]),
    }
    return convert_reinforce_params(raw)


def sample_td3_ig_params(trial: Any, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """rl-zoo3's TD3 search space plus the action-gradient transform and the actor output."""
    from rl_zoo3.hyperparams_opt import sample_td3_params

    params = sample_td3_params(trial, n_actions, n_envs, additional_args)
    params["action_grad_transform"] = trial.suggest_categorical("action_grad_transform", ["none", "invert"])
    params["actor_output"] = trial.suggest_categorical("actor_output", ["tanh", "linear"])
    return convert_td3_ig_params(params)


def convert_td3_ig_params(params: dict[str, Any]) -> dict[str, Any]:
    """Trial parameters -> TD3/DDPG hyperparameters ("none" stands for None in the study storage)."""
    from rl_zoo3.hyperparams_opt import convert_offpolicy_params

    extra = {k: params.pop(k) for k in ("action_grad_transform", "actor_output") if k in params}
    out = params if "policy_kwargs" in params else convert_offpolicy_params(params)
    if "action_grad_transform" in extra:
        out["action_grad_transform"] = None if extra["action_grad_transform"] == "none" else extra["action_grad_transform"]
    if "actor_output" in extra:
        out["actor_output"] = extra["actor_output"]
    return out
