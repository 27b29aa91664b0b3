"""Per-sample scores grad log pi(a_i|s_i) for a whole batch, without a Python loop.

The question: "computing the score for each state-action sample with one autograd.grad call
per sample is horrendously slow". One call gives the N x P matrix; its rows are the
compatible features of Natural Actor-Critic, and Psi^T Psi / N is the empirical Fisher.

    python examples/per_sample_scores.py
"""

import time

import torch as th
from stable_baselines3 import PPO

from sb3_natural.common import ActorHead, compatible_least_squares, per_sample_scores

th.set_num_threads(1)
model = PPO("MlpPolicy", "CartPole-v1", n_steps=512, seed=0, device="cpu")
model.learn(512)  # fills model.rollout_buffer with a real rollout
data = next(model.rollout_buffer.get(batch_size=None))

head = ActorHead(model.policy)  # the actor as a pure function; build once, reuse
t0 = time.perf_counter()
scores = per_sample_scores(head, data.observations, data.actions)  # [N, P]
t_fast = time.perf_counter() - t0
t0 = time.perf_counter()
naive = per_sample_scores(head, data.observations, data.actions, method="loop")  # one backward per sample
t_loop = time.perf_counter() - t0
print(f"scores: {tuple(scores.shape)}  max |fast - loop| = {(scores - naive).abs().max():.2e}")
print(f"fast {1e3 * t_fast:.1f} ms, loop {1e3 * t_loop:.1f} ms ({t_loop / t_fast:.0f}x)")

# The natural gradient as the compatible least-squares fit min_w mean (psi_i . w - A_i)^2:
w = compatible_least_squares(scores, data.advantages, ridge=1e-3)
g = scores.T @ data.advantages / len(data.advantages)  # vanilla policy gradient
cos = float(w @ g / (w.norm() * g.norm()))
print(f"natural gradient |w| = {w.norm():.3f}, cosine with the vanilla gradient = {cos:.3f}")
