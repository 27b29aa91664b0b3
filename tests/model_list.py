"""One list of every algorithm class and each option that changes its policy or its update.

The contract tests (``test_save_load.py``, ...) are parametrized over it, as SB3's own tests are over
their ``MODEL_LIST``. A new algorithm or option gets a row here and so every contract test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sb3_natural import ACKTR, DDPG, NAC, REINFORCE, TD3, FisherTRPO


@dataclass(frozen=True)
class ModelCase:
    id: str
    cls: type
    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    steps: int = 64  # enough for at least one update

    @property
    def off_policy(self) -> bool:
        return self.cls in (TD3, DDPG)

    def build(self, env: Any = None, policy: str = "MlpPolicy", **extra: Any) -> Any:
        kwargs = {"seed": 0, "device": "cpu", "policy_kwargs": {"net_arch": [16]}, **self.kwargs, **extra}
        return self.cls(policy, self.env_id if env is None else env, **kwargs)


ON_POLICY_CASES = [
    ModelCase("nac_lstsq", NAC, "CartPole-v1", {"n_steps": 32}),
    ModelCase("nac_cg_empirical", NAC, "CartPole-v1", {"n_steps": 32, "solver": "cg"}),
    ModelCase("nac_cg_analytic", NAC, "Pendulum-v1", {"n_steps": 32, "solver": "cg", "fisher": "analytic"}),
    ModelCase("nac_sgd", NAC, "Pendulum-v1", {"n_steps": 32, "solver": "sgd", "target_kl": None}),
    ModelCase("fisher_trpo_analytic_cg", FisherTRPO, "Pendulum-v1", {"n_steps": 32, "batch_size": 32}),
    ModelCase("fisher_trpo_direct", FisherTRPO, "CartPole-v1", {"n_steps": 32, "batch_size": 32, "fisher": "direct"}),
    ModelCase("fisher_trpo_dense", FisherTRPO, "CartPole-v1", {"n_steps": 32, "batch_size": 32, "solver": "dense"}),
    ModelCase("reinforce_value", REINFORCE, "CartPole-v1", {"n_episodes": 2}),
    ModelCase("reinforce_mean", REINFORCE, "Pendulum-v1", {"n_episodes": None, "n_steps": 200, "baseline": "mean"}, steps=200),
    ModelCase("reinforce_none", REINFORCE, "CartPole-v1", {"n_episodes": 2, "baseline": None}),
    ModelCase("acktr_exact_kfac", ACKTR, "CartPole-v1", {"n_steps": 16}),
    ModelCase("acktr_sample_kfac", ACKTR, "Pendulum-v1", {"n_steps": 16, "fisher": "sample", "kfac_damping_mode": "exact"}),
    ModelCase("acktr_exact_adam", ACKTR, "Pendulum-v1", {"n_steps": 16, "critic": "adam", "batch_size": 16}),
    ModelCase("acktr_identity", ACKTR, "CartPole-v1", {"n_steps": 16, "fisher": "identity", "target_kl": None}),
]

OFF_POLICY_CASES = [
    ModelCase(
        f"{cls.__name__.lower()}_{output}_{transform or 'none'}",
        cls,
        "Pendulum-v1",
        {"learning_starts": 20, "actor_output": output, "action_grad_transform": transform},
        steps=40,
    )
    for cls in (TD3, DDPG)
    for output in ("tanh", "linear")
    for transform in (None, "invert")
]

MODEL_LIST = ON_POLICY_CASES + OFF_POLICY_CASES
