"""save/load over every class and option (``MODEL_LIST``): loaded with the kwargs it was built with, the
model has the same parameters, acts the same inside the action space, and trains on."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch as th
from model_list import MODEL_LIST, ModelCase
from stable_baselines3.common.utils import set_random_seed


@pytest.mark.parametrize("case", MODEL_LIST, ids=[c.id for c in MODEL_LIST])
def test_save_load_round_trip_with_build_kwargs(case: ModelCase, tmp_path):
    model = case.build()
    model.learn(case.steps)
    n_updates = model._n_updates
    assert n_updates >= 1
    env = model.get_env()
    obs = env.reset()
    actions, _ = model.predict(obs, deterministic=True)
    model.save(tmp_path / "model")

    loaded = case.cls.load(tmp_path / "model", env=env, device="cpu", policy_kwargs=case.build().policy_kwargs)
    for (name, a), (name_b, b) in zip(model.policy.state_dict().items(), loaded.policy.state_dict().items(), strict=True):
        assert name == name_b and th.equal(a, b), name
    for key, value in case.kwargs.items():
        assert getattr(loaded, key) == value, key
    loaded_actions, _ = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(loaded_actions, actions)
    space = loaded.action_space
    assert all(space.contains(np.asarray(a, dtype=space.dtype)) for a in loaded_actions)

    if not case.off_policy:  # the actor view is rebuilt over the loaded policy's own parameters
        loaded_ids = {id(p) for p in loaded.policy.parameters()}
        assert {id(p) for p in loaded._head.params} <= loaded_ids
        assert all(id(p) in loaded_ids for g in loaded.policy.optimizer.param_groups for p in g["params"])
    loaded.learn(case.steps, reset_num_timesteps=False)
    assert loaded._n_updates > n_updates
    assert all(th.isfinite(p).all() for p in loaded.policy.parameters())


@pytest.mark.parametrize("case", MODEL_LIST, ids=[c.id for c in MODEL_LIST])
def test_deepcopy_is_an_independent_equal_model(case: ModelCase):
    """``copy.deepcopy(model)`` trains like the original from the same random state and never touches it
    (SB3's own A2C cannot be deep-copied after ``learn``: it keeps non-leaf tensors).
    (ACKTR's K-FAC built its target from closures over the original modules: the copy recorded its own
    layers while running the original's, and failed.)"""
    model = case.build()
    model.learn(case.steps)
    copied = copy.deepcopy(model)
    before = [p.detach().clone() for p in model.policy.parameters()]
    set_random_seed(123)  # numpy too: SB3's rollout buffer draws its batch order from it
    copied.learn(case.steps * 2, reset_num_timesteps=False)
    for p, q in zip(before, model.policy.parameters(), strict=True):
        assert th.equal(p, q)
    assert any(not th.equal(p, q) for p, q in zip(before, copied.policy.parameters(), strict=True))
    set_random_seed(123)  # numpy too: SB3's rollout buffer draws its batch order from it
    model.learn(case.steps * 2, reset_num_timesteps=False)
    for p, q in zip(model.policy.parameters(), copied.policy.parameters(), strict=True):
        assert th.equal(p, q)


@pytest.mark.parametrize("case", MODEL_LIST, ids=[c.id for c in MODEL_LIST])
def test_get_set_parameters_contract(case: ModelCase):
    """SB3's ``get_parameters`` / ``set_parameters`` contract for every saved object, optimizers aside:
    a mapping of names to tensors; ``exact_match=True`` refuses a state without its last entry (a
    RuntimeError, as torch's ``load_state_dict``); ``exact_match=False`` replaces exactly the given
    entries. (ACKTR's K-FAC state was a nested dict with an int, which SB3's own test could not
    randomize.)"""
    model = case.build()
    model.learn(case.steps)
    original = copy.deepcopy(model.get_parameters())
    for name, state in original.items():
        if "optim" not in name:
            assert state and all(isinstance(v, th.Tensor) for v in state.values()), name
    without_last = {name: dict(list(state.items())[:-1]) for name, state in original.items()}
    with pytest.raises(RuntimeError):
        model.set_parameters(without_last, exact_match=True)
    gen = th.Generator().manual_seed(0)
    randomized = {
        name: state
        if "optim" in name
        else {k: th.rand(v.shape, generator=gen, dtype=v.dtype) for k, v in list(state.items())[:-1]}
        for name, state in original.items()
    }
    model.set_parameters(randomized, exact_match=False)
    now = model.get_parameters()
    for name, state in original.items():
        if "optim" in name:
            continue
        last = list(state)[-1]
        for key, value in state.items():
            if key == last:
                assert th.equal(value, now[name][key]), (name, key)
            else:
                assert th.equal(randomized[name][key], now[name][key]), (name, key)
    model.set_parameters(original, exact_match=True)
    for name, state in original.items():
        if "optim" not in name:
            for key, value in state.items():
                assert th.equal(value, model.get_parameters()[name][key]), (name, key)
    model.learn(case.steps, reset_num_timesteps=False)


@pytest.mark.parametrize("case", MODEL_LIST, ids=[c.id for c in MODEL_LIST])
def test_loaded_model_trains_as_the_original_goes_on(case: ModelCase, tmp_path):
    """Loaded (default force_reset=True) on a copy of the envs, the model learns on exactly as the original
    does after the same reset: the saved state is all the training state. (TD3/DDPG with
    action_grad_transform="invert" trained without the transform after load; NAC's "sgd" solver lost its
    warm start; REINFORCE went on with episodes begun before the envs were reset.)"""
    model = case.build()
    model.learn(case.steps)
    model.save(tmp_path / "model")
    envs = copy.deepcopy(model.get_env())
    loaded = case.cls.load(tmp_path / "model", env=envs, device="cpu", policy_kwargs=case.build().policy_kwargs)
    model.set_env(model.get_env(), force_reset=True)  # as load() does
    if case.off_policy:
        loaded.replay_buffer = copy.deepcopy(model.replay_buffer)  # saved on its own (save_replay_buffer)
    for m in (model, loaded):
        m.set_random_seed(7)  # torch, numpy, the action space, the envs' next reset
        m.learn(case.steps * 2, reset_num_timesteps=False)
    assert loaded._n_updates == model._n_updates
    for (name, a), b in zip(model.policy.state_dict().items(), loaded.policy.state_dict().values(), strict=True):
        assert th.equal(a, b), name
