"""Tests of the tabletop suite: spaces, determinism, success flags, experts, bad actions, language."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf

import vla.envs  # noqa: F401 - registers the gymnasium ids
from vla.envs import registry, tabletop
from vla.features import STATE_KEY, camera_key

REPO = Path(__file__).resolve().parents[1]


def run_expert(env: gym.Env, seed: int, noise_std: float = 0.0) -> tuple[bool, list[np.ndarray]]:
    """One expert episode: (success at the end, actions taken)."""
    expert = tabletop.make_expert(env, noise_std=noise_std, seed=seed)
    obs, info = env.reset(seed=seed)
    actions, done = [], False
    while not done:
        action = expert(obs)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
    return bool(info["success"]), actions


@pytest.fixture(scope="module")
def small_env():
    env = tabletop.make("pick-red", image_size=32)
    yield env
    env.close()


def test_spaces_and_names(small_env):
    env = small_env
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs[camera_key("front")].shape == (32, 32, 3) and obs[camera_key("front")].dtype == np.uint8
    assert obs[camera_key("wrist")].shape == (32, 32, 3)
    assert obs[STATE_KEY].dtype == np.float32 and obs[STATE_KEY].shape == (len(env.state_names),)
    assert obs["instruction"] in tabletop.TASKS["pick-red"].train_phrasings
    assert env.action_space.shape == (len(env.action_names),) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, *_ = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)


def test_joint_pos_control_space_and_expert():
    env = tabletop.make("reach-green", cameras=[], control="joint_pos")
    assert env.action_space.shape == (7,) and env.action_names[-1] == "gripper"
    assert np.all(env.action_space.low[:6] == env.ids.arm_range[:, 0].astype(np.float32))
    success, _ = run_expert(env, seed=3)
    assert success


def test_same_seed_same_actions_same_trajectory():
    def rollout() -> list[dict]:
        env = tabletop.make("push-blue", image_size=32)
        env.action_space.seed(7)
        frames = [env.reset(seed=11)[0]]
        for _ in range(15):
            frames.append(env.step(env.action_space.sample())[0])
        env.close()
        return frames

    first, second = rollout(), rollout()
    for a, b in zip(first, second, strict=True):
        assert a["instruction"] == b["instruction"]
        for key in (camera_key("front"), camera_key("wrist"), STATE_KEY):
            np.testing.assert_array_equal(a[key], b[key])
    # The frames are distinct arrays that really change (no shared render buffer, the arm moves).
    assert not np.array_equal(first[0][camera_key("wrist")], first[-1][camera_key("wrist")])


def test_different_seeds_give_different_layouts():
    env = tabletop.make("reach-red", cameras=[])
    env.reset(seed=0)
    a = env.block_pos("red")
    env.reset(seed=1)
    assert not np.allclose(a, env.block_pos("red"))


@pytest.mark.parametrize("task", tabletop.task_names("all"))
def test_expert_succeeds(task):
    env = tabletop.make(task, cameras=[])
    for seed in (101, 102):
        success, actions = run_expert(env, seed)
        assert success, f"{task} expert failed on seed {seed}"
        assert len(actions) <= env.max_steps


def test_noisy_expert_still_succeeds_and_differs():
    env = tabletop.make("pick-blue", cameras=[])
    clean = run_expert(env, seed=5)[1]
    success, noisy = run_expert(env, seed=5, noise_std=0.2)
    assert success
    assert len(clean) != len(noisy) or not np.allclose(clean, noisy)


def test_success_flag_and_time_limit():
    env = tabletop.make("open-drawer", cameras=[], max_steps=5)
    _, info = env.reset(seed=0)
    assert info["success"] is False
    for step in range(5):
        _, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
        assert isinstance(info["success"], bool) and not info["success"]
        assert not terminated and truncated == (step == 4)


def test_bad_actions_raise_clear_errors(small_env):
    small_env.reset(seed=0)
    with pytest.raises(ValueError, match="non-finite.*ee.dy"):
        small_env.step(np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        small_env.step(np.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        small_env.step(np.zeros((1, 4)))


def test_out_of_range_actions_are_clipped_and_counted():
    env = tabletop.make("reach-red", cameras=[])
    twin = tabletop.make("reach-red", cameras=[])
    env.reset(seed=2)
    twin.reset(seed=2)
    obs, *_, info = env.step(np.array([5.0, 0.0, -3.0, 2.0]))
    obs_twin, *_, info_twin = twin.step(np.array([1.0, 0.0, -1.0, 1.0]))
    assert info["clipped_actions"] == 1 and info_twin["clipped_actions"] == 0
    np.testing.assert_array_equal(obs[STATE_KEY], obs_twin[STATE_KEY])  # clipped == the bound
    *_, info = env.step(np.zeros(4))
    assert info["clipped_actions"] == 1
    *_, info = env.step(np.array([0.0, -1.5, 0.0, 0.0]))
    assert info["clipped_actions"] == 2
    env.reset(seed=3)
    assert env.step(np.zeros(4))[-1]["clipped_actions"] == 0


def test_language_decides_success():
    """Same seed, same layout, same actions: only the instruction's colour changes the outcome."""
    red, blue = tabletop.make("reach-red", cameras=[]), tabletop.make("reach-blue", cameras=[])
    red.reset(seed=4)
    blue.reset(seed=4)
    for colour in ("red", "green", "blue"):
        np.testing.assert_array_equal(red.block_pos(colour), blue.block_pos(colour))
    assert "red" in red.instruction and "blue" in blue.instruction
    success, actions = run_expert(red, seed=4)
    assert success
    blue.reset(seed=4)
    assert not any(blue.step(a)[-1]["success"] for a in actions)
    # And the blue expert succeeds where the red one's actions did not.
    assert run_expert(blue, seed=4)[0]


def test_heldout_phrasings_are_disjoint_and_used():
    for name in tabletop.task_names("all"):
        info = tabletop.task_info(name)
        assert info["train_phrasings"] and info["heldout_phrasings"]
        assert not set(info["train_phrasings"]) & set(info["heldout_phrasings"]), name
    env = tabletop.make("press-green", cameras=[], phrasing="heldout")
    seen = {env.reset(seed=s)[0]["instruction"] for s in range(12)}
    assert seen <= set(tabletop.TASKS["press-green"].heldout_phrasings) and len(seen) > 1
    with pytest.raises(ValueError, match="phrasing"):
        tabletop.make("press-green", phrasing="test")


def test_task_selection_and_gym_registration():
    assert tabletop.task_names(None) == tabletop.task_names("all") and len(tabletop.task_names(None)) >= 8
    assert tabletop.task_names("demo") == ["reach-red", "reach-green", "reach-blue"]
    assert tabletop.task_names(["pick-red"]) == ["pick-red"]
    with pytest.raises(ValueError, match="unknown tabletop tasks"):
        tabletop.task_names(["fly-away"])
    env = gym.make("vla/stack-red-on-blue-v0", image_size=24, cameras=["front"])
    obs, _ = env.reset(seed=0)
    assert set(obs) == {camera_key("front"), STATE_KEY, "instruction"}
    assert obs[camera_key("front")].shape == (24, 24, 3)
    env.close()


@pytest.mark.parametrize("config", ["tabletop", "tabletop_demo"])
def test_env_configs_build_through_the_registry(config):
    cfg = OmegaConf.load(REPO / "envs" / f"{config}.yaml")
    tasks = registry.task_names(cfg)
    assert len(tasks) >= 3
    env = registry.make_env(cfg, tasks[0], cameras=["front"])
    obs, _ = env.reset(seed=0)
    assert obs[camera_key("front")].shape == (cfg.image_size, cfg.image_size, 3)
    expert = registry.make_expert(cfg, env)
    assert env.action_space.contains(expert(obs))
    env.close()


def test_slots_layout_shuffles_colours_over_fixed_slots():
    from vla.envs.tabletop import make, scene

    env = make("reach-red", cameras=[], layout="slots")
    orders = set()
    try:
        for seed in range(12):
            env.reset(seed=seed)
            blocks = {c: env.unwrapped.block_pos(c)[:2] for c in scene.COLOURS}
            slot_of = {}
            for colour, xy in blocks.items():
                distances = np.linalg.norm(scene.BLOCK_SLOTS - xy, axis=1)
                assert distances.min() <= scene.SLOT_JITTER * np.sqrt(2) + 1e-6
                slot_of[colour] = int(distances.argmin())
            assert sorted(slot_of.values()) == [0, 1, 2]  # one block per slot
            orders.add(tuple(slot_of[c] for c in scene.COLOURS))
    finally:
        env.close()
    assert len(orders) > 1  # colours move between slots: the instruction still decides the target
    with pytest.raises(ValueError, match="layout"):
        make("reach-red", cameras=[], layout="grid")
