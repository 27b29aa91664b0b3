"""TD3 whose actor gradient is written as a chain rule, with inverting gradients on a linear actor.

The chain rule grad_theta Q(s, mu(s)) = grad_a Q . grad_theta mu gives the same number as autograd's
direct gradient; writing it out lets grad_a Q be transformed first. Here: inverting gradients
(Hausknecht & Stone 2016), which keep an unsquashed actor inside the action bounds.

    python examples/td3_inverting_gradients.py [timesteps]
"""

import sys

import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_natural import TD3
from sb3_natural.common.chain_rule import invert_gradients

th.set_num_threads(1)

# The transform on its own: actions in [-1, 1]; positive gradients push up, negative push down.
a = th.tensor([[0.0], [0.9], [1.2]])
g = th.tensor([[1.0], [1.0], [1.0]])
print("inverted:", invert_gradients(a, g, th.tensor([-1.0]), th.tensor([1.0])).flatten().tolist())  # 0.5, 0.05, -0.1

timesteps = int(sys.argv[1]) if len(sys.argv) > 1 else 15_000
model = TD3(
    "MlpPolicy", "Pendulum-v1", action_grad_transform="invert", actor_output="linear", learning_starts=1000, seed=0,
    device="cpu", policy_kwargs={"net_arch": [64, 64]},
)  # fmt: skip
model.learn(timesteps)
logs = model.logger.name_to_value
print(f"scaled-down fraction {logs['train/action_grad_scaled_fraction']:.2f}, ", end="")
print(f"mean distance to the bounds {logs['train/action_distance_to_bounds']:.2f}")
mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=10, deterministic=True)
print(f"mean return {mean:.1f} +/- {std:.1f}")
