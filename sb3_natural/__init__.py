"""sb3_natural: natural-gradient and score-function policy optimization for Stable-Baselines3."""

from sb3_natural.acktr import ACKTR
from sb3_natural.common.scores import per_sample_scores
from sb3_natural.deterministic import DDPG, TD3
from sb3_natural.fisher_trpo import FisherTRPO
from sb3_natural.nac import NAC
from sb3_natural.reinforce import REINFORCE
from sb3_natural.version import __version__

__all__ = ["ACKTR", "DDPG", "NAC", "REINFORCE", "TD3", "FisherTRPO", "__version__", "per_sample_scores"]
