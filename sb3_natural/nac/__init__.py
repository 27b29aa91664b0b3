from sb3_natural.nac.nac import NAC
from sb3_natural.nac.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["NAC", "CnnPolicy", "MlpPolicy", "MultiInputPolicy"]
