from sb3_natural.deterministic.chain_rule import DDPG, TD3
from sb3_natural.deterministic.policies import ChainActor, CnnChainPolicy, MlpPolicy, MultiInputChainPolicy

__all__ = ["DDPG", "TD3", "ChainActor", "CnnChainPolicy", "MlpPolicy", "MultiInputChainPolicy"]
