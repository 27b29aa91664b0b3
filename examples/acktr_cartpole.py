"""ACKTR on CartPole-v1: A2C's loss, a K-FAC natural-gradient step inside a trust region.

python examples/acktr_cartpole.py [timesteps]
"""

import sys

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_natural import ACKTR

th.set_num_threads(1)
timesteps = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
model = ACKTR("MlpPolicy", env, n_steps=32, target_kl=0.01, momentum=0.0, seed=0, device="cpu")
model.learn(timesteps)
logs = model.logger.name_to_value
print(f"last update: step size eta {logs['train/step_scale']:.4f}, KL {logs['train/kl']:.3g}, ", end="")
print(f"explained variance {logs['train/explained_variance']:.3f}")
mean, std = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=1, seed=1000), n_eval_episodes=10, deterministic=True)
print(f"mean return {mean:.1f} +/- {std:.1f}")
