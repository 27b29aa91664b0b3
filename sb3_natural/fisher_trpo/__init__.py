from sb3_natural.fisher_trpo.fisher_trpo import FisherTRPO
from sb3_natural.fisher_trpo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

__all__ = ["CnnPolicy", "FisherTRPO", "MlpPolicy", "MultiInputPolicy"]
