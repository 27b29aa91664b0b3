"""REINFORCE with a learned value baseline on CartPole-v1 (complete episodes, reward-to-go).

python examples/reinforce_cartpole.py [timesteps]
"""

import sys

import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_natural import REINFORCE

th.set_num_threads(1)
timesteps = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
model = REINFORCE("MlpPolicy", "CartPole-v1", n_episodes=8, baseline="value", seed=0, device="cpu")
model.learn(timesteps)
logs = model.logger.name_to_value
print(f"last update: {logs['train/n_episodes']} episodes, {logs['train/n_steps_in_update']} steps")
mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=10, deterministic=True)
print(f"mean return {mean:.1f} +/- {std:.1f}")
