"""FisherTRPO on Pendulum-v1 with gSDE (rl-zoo3's TRPO hyperparameters), and the KL it reached.

python examples/fisher_trpo_pendulum.py [timesteps]
"""

import sys

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_natural import FisherTRPO

th.set_num_threads(1)
timesteps = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
model = FisherTRPO(
    "MlpPolicy", env, n_steps=1024, gamma=0.9, n_critic_updates=15, use_sde=True, sde_sample_freq=4, seed=0, device="cpu"
)
model.learn(timesteps)
logs = model.logger.name_to_value
print(f"last update: KL {logs['train/kl_divergence_loss']:.3g} (target {model.target_kl}), ", end="")
print(f"line search success {logs['train/is_line_search_success']:.0f}, CG iterations {logs['train/solver_iterations']:.0f}")
mean, std = evaluate_policy(model, model.get_env(), n_eval_episodes=10, deterministic=True)
print(f"mean return {mean:.1f} +/- {std:.1f}")
