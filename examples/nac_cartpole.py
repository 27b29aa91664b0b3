"""Natural Actor-Critic on CartPole-v1: the natural gradient is the compatible critic's weights.

python examples/nac_cartpole.py [timesteps]
"""

import sys

import torch as th
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_natural import NAC

th.set_num_threads(1)
timesteps = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
model = NAC("MlpPolicy", "CartPole-v1", n_steps=512, gae_lambda=0.98, solver="lstsq", target_kl=0.01, seed=0, device="cpu")
model.learn(timesteps)
logs = model.logger.name_to_value
print(f"last update: KL {logs['train/kl']:.3g}, compatible R^2 {logs['train/compatible_r2']:.3f}, ", end="")
print(f"cos(natural, vanilla) {logs['train/natural_vanilla_cosine']:.3f}")
mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=10, deterministic=True)
print(f"mean return {mean:.1f} +/- {std:.1f}")
