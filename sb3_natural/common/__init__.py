"""Pure math shared by the algorithms: actor heads, per-sample scores, Fisher products, the score Gram matrix,
K-FAC, solvers."""

from sb3_natural.common.distributions import OutputDistribution
from sb3_natural.common.fisher import AnalyticFVP, DirectFVP, EmpiricalFVP, dense_fisher, empirical_fisher, fisher_rows
from sb3_natural.common.gram import GramSolution, gram_least_squares, score_gram, score_products, weighted_score_sum
from sb3_natural.common.heads import ActorHead, actor_parameters, output_distribution
from sb3_natural.common.kfac import KFAC
from sb3_natural.common.scores import per_sample_grads, per_sample_scores
from sb3_natural.common.solvers import CGResult, compatible_least_squares, conjugate_gradient, dense_solve, dual_solve

__all__ = [
    "KFAC",
    "ActorHead",
    "AnalyticFVP",
    "CGResult",
    "DirectFVP",
    "EmpiricalFVP",
    "GramSolution",
    "OutputDistribution",
    "actor_parameters",
    "compatible_least_squares",
    "conjugate_gradient",
    "dense_fisher",
    "dense_solve",
    "dual_solve",
    "empirical_fisher",
    "fisher_rows",
    "gram_least_squares",
    "output_distribution",
    "per_sample_grads",
    "per_sample_scores",
    "score_gram",
    "score_products",
    "weighted_score_sum",
]
