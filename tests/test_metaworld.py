"""The Meta-World adapter: task sets, observations, upright images, seeding, action checks, experts."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from vla.config import load_group
from vla.envs import registry
from vla.envs.metaworld_instructions import INSTRUCTION_CHARSET, instructions
from vla.envs.metaworld_suite import MetaWorldEnv, difficulty, make, make_expert, task_names
from vla.features import INSTRUCTION_KEY, STATE_KEY, camera_key

pytest.importorskip("metaworld", reason="the Meta-World adapter needs the metaworld extra")

SMALL = {"image_size": 48}


@pytest.fixture(scope="module")
def reach() -> Iterator[MetaWorldEnv]:
    env = make("reach", image_size=[48, 64], cameras={"front": "corner2", "side": "corner3"})
    yield env
    env.close()


def test_task_sets_resolve_to_the_published_counts() -> None:
    import metaworld

    assert len(task_names("MT10")) == 10
    assert task_names("MT50") == sorted(metaworld.env_dict.ALL_V3_ENVIRONMENTS)
    assert task_names("MT10") == list(metaworld.env_dict.MT10_V3)
    counts = {split: len(task_names(split)) for split in ("easy", "medium", "hard", "very_hard")}
    assert counts == {"easy": 28, "medium": 11, "hard": 6, "very_hard": 5}
    assert sorted(sum((task_names(s) for s in counts), [])) == task_names("MT50")  # a partition
    assert task_names(["reach", "push-v3", "reach-v3"]) == ["reach-v3", "push-v3"]
    assert difficulty("stick-pull") == "very_hard" and difficulty("reach-v3") == "easy"
    with pytest.raises(ValueError, match="unknown Meta-World task 'fly'"):
        task_names(["fly"])


def test_every_task_has_train_and_disjoint_heldout_phrasings() -> None:
    for task in task_names("MT50"):
        train, heldout = instructions(task, "train"), instructions(task, "heldout")
        assert len(train) >= 3 and len(heldout) >= 2, task
        assert not set(train) & set(heldout), task
        assert all(set(text) <= set(INSTRUCTION_CHARSET) for text in train + heldout), task
    with pytest.raises(ValueError, match="phrasing"):
        instructions("reach", "test")


def test_observation_follows_the_architecture_and_its_space(reach: MetaWorldEnv) -> None:
    observation, info = reach.reset(seed=0)
    assert set(observation) == {camera_key("front"), camera_key("side"), STATE_KEY, INSTRUCTION_KEY}
    assert observation[camera_key("front")].shape == (48, 64, 3)
    assert observation[camera_key("side")].dtype == np.uint8
    assert observation[STATE_KEY].dtype == np.float32 and observation[STATE_KEY].shape == (4,)
    assert observation[INSTRUCTION_KEY] in instructions("reach", "train")
    assert reach.observation_space.contains(observation)
    assert info["success"] is False
    for _ in range(3):
        observation, _, _, _, info = reach.step(np.zeros(4, dtype=np.float32))
        assert type(info["success"]) is bool
        assert reach.observation_space.contains(observation)
    assert len(reach.state_names) == 4 and reach.action_names == ["delta_x", "delta_y", "delta_z", "gripper"]


def _red(image: np.ndarray) -> np.ndarray:
    image = image.astype(int)  # the Sawyer arm is red; everything else in the scene is not
    return (image[..., 0] > 100) & (image[..., 1] < 60) & (image[..., 2] < 60)


def test_corner_camera_images_are_upright() -> None:
    """Raise the hand: the red arm pixels that appear must lie above those that disappear."""
    cameras = {"front": "corner2", "corner": "corner", "corner3": "corner3"}
    env = make("reach", image_size=96, cameras=cameras)
    try:
        observation, _ = env.reset(seed=0)
        for _ in range(15):
            low, *_ = env.step([0.0, 0.0, -1.0, 0.0])
        for _ in range(25):
            high, *_ = env.step([0.0, 0.0, 1.0, 0.0])
        assert high[STATE_KEY][2] - low[STATE_KEY][2] > 0.1  # the hand did go up
        rows = np.arange(96)[:, None]
        for name in cameras:
            before, after = _red(low[camera_key(name)]), _red(high[camera_key(name)])
            appeared, gone = after & ~before, before & ~after
            assert appeared.sum() > 20 and gone.sum() > 20, name
            up_shift = (rows * gone).sum() / gone.sum() - (rows * appeared).sum() / appeared.sum()
            assert up_shift > 2.0, f"{name}: the arm moved down the image ({up_shift:.1f} rows) when raised"
    finally:
        env.close()


def test_same_seed_same_layout_instruction_and_images() -> None:
    first, second = make("pick-place", **SMALL), make("pick-place", **SMALL)
    try:
        a, _ = first.reset(seed=11)
        goal_a = first.privileged_state[-3:].copy()
        b, _ = first.reset(seed=12)
        c, _ = second.reset(seed=11)  # a fresh env, same seed
        for key in a:
            assert np.array_equal(np.asarray(a[key]), np.asarray(c[key])), key
        assert np.array_equal(goal_a, second.privileged_state[-3:])
        assert not np.array_equal(a[camera_key("front")], b[camera_key("front")])  # the layout moved
        assert not np.array_equal(goal_a, first.privileged_state[-3:])
    finally:
        first.close()
        second.close()


def test_bad_actions_are_rejected_and_out_of_range_clipped(reach: MetaWorldEnv) -> None:
    fresh = make("reach", **SMALL)
    try:
        with pytest.raises(RuntimeError, match="reset"):
            fresh.step(np.zeros(4))
    finally:
        fresh.close()
    reach.reset(seed=1)
    with pytest.raises(ValueError, match="non-finite.*delta_y"):
        reach.step([0.0, np.nan, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"shape \(4,\).*got shape \(3,\)"):
        reach.step([0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="numeric"):
        reach.step(["a", "b", "c", "d"])
    _, _, _, _, info = reach.step([5.0, 0.0, 0.0, 0.0])
    assert info["action_clipped"] is True and info["clipped_steps"] == 1
    _, _, _, _, info = reach.step([0.5, 0.0, 0.0, -1.0])
    assert info["action_clipped"] is False and info["clipped_steps"] == 1
    reach.reset(seed=1)
    assert reach.clipped_steps == 0


@pytest.mark.parametrize("task", ["reach", "button-press"])
@pytest.mark.parametrize("seed", [0, 1])
def test_scripted_expert_succeeds(task: str, seed: int) -> None:
    env = make(task, image_size=32, cameras=["corner2"], max_episode_steps=300)
    try:
        observation, _ = env.reset(seed=seed)
        expert = make_expert(env, noise_std=0.05, seed=seed)
        for _step in range(300):
            observation, _, terminated, truncated, info = env.step(expert(observation))
            if terminated or truncated:
                break
        assert terminated and info["success"], f"{task} seed {seed}: no success in {_step + 1} steps"
    finally:
        env.close()


def test_heldout_phrasing_full_state_and_episode_limit() -> None:
    env = make(
        "drawer-close", state="full", phrasing="heldout", max_episode_steps=2, cameras=["topview"], **SMALL
    )
    try:
        observation, _ = env.reset(seed=3)
        assert observation[INSTRUCTION_KEY] in instructions("drawer-close", "heldout")
        assert observation[STATE_KEY].shape == (39,) and len(env.state_names) == 39
        _, _, terminated, truncated, _ = env.step(np.zeros(4))
        assert not truncated
        _, _, terminated, truncated, _ = env.step(np.zeros(4))
        assert truncated and not terminated
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(4))
    finally:
        env.close()
    with pytest.raises(ValueError, match="camera 'x'.*no camera 'nope'"):
        make("reach", cameras={"x": "nope"})
    with pytest.raises(ValueError, match="state"):
        make("reach", state="joints")


@pytest.mark.parametrize("config", ["metaworld_mt10", "metaworld_mt50"])
def test_env_configs_build_through_the_registry(config: str) -> None:
    cfg = load_group("env", config)
    tasks = registry.task_names(cfg)
    assert len(tasks) == (10 if config.endswith("mt10") else 50)
    env = registry.make_env(cfg, tasks[0], image_size=32)
    try:
        observation, _ = env.reset(seed=0)
        images = [observation[camera_key(name)] for name in cfg.cameras]
        assert list(cfg.cameras) == ["front", "wrist", "side"]
        assert all(image.shape == (32, 32, 3) for image in images)
        assert len({image.tobytes() for image in images}) == 3  # three distinct views
        action = registry.make_expert(cfg, env, seed=0)(observation)
        assert action.shape == (4,) and action.dtype == np.float32
    finally:
        env.close()


def test_free_workspace_camera_frames_the_table_and_bad_specs_are_named() -> None:
    """`workspace` (or any {lookat, distance, azimuth, elevation}) is a camera placed by the config."""
    from vla.envs.metaworld_render import WORKSPACE_CAMERA

    env = make(
        "reach", image_size=32, cameras={"ws": "workspace", "same": dict(WORKSPACE_CAMERA), "c2": "corner2"}
    )
    try:
        obs, _ = env.reset(seed=3)
        ws, same, corner = obs[camera_key("ws")], obs[camera_key("same")], obs[camera_key("c2")]
        assert ws.shape == (32, 32, 3) and np.array_equal(ws, same)  # the name is that spec
        assert not np.array_equal(ws, corner)
        moved = env.step(np.array([1.0, 0.0, 0.0, 0.0]))[0][camera_key("ws")]
        assert not np.array_equal(moved, ws)  # the arm moved in view
    finally:
        env.close()
    with pytest.raises(ValueError, match="missing \\['distance'"):
        make("reach", cameras={"x": {"lookat": [0, 0.6, 0], "azimuth": 0, "elevation": -30}})
