"""The same seed gives the same result on CPU, for every class and option of the model list."""

from __future__ import annotations

import pytest
import torch as th
from model_list import MODEL_LIST, ModelCase


def _trained(case: ModelCase, seed: int) -> tuple[th.Tensor, object]:
    model = case.build(seed=seed)
    model.learn(2 * case.steps)
    params = th.cat([p.detach().flatten() for p in model.policy.parameters()])
    obs = model.get_env().reset()
    return params, model.predict(obs, deterministic=True)[0]


@pytest.mark.parametrize("case", MODEL_LIST, ids=[c.id for c in MODEL_LIST])
def test_same_seed_same_result(case: ModelCase):
    (a, act_a), (b, act_b), (c, _) = _trained(case, 3), _trained(case, 3), _trained(case, 4)
    assert th.equal(a, b)
    assert (act_a == act_b).all()
    assert not th.equal(a, c)  # the seed matters
