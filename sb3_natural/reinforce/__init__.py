from sb3_natural.reinforce.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_natural.reinforce.reinforce import REINFORCE

__all__ = ["REINFORCE", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
