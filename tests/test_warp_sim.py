"""The MuJoCo Warp tabletop backend against the classic one, on Warp's CPU device (2-3 worlds).

Same seeds give the same initial states and instructions; the same actions give the same states
within float32 tolerance; a masked reset touches only its worlds; images show moved blocks; the
batched success tests agree with the classic predicates; the one scene change (an excluded contact
pair) is inert in classic MuJoCo. Kernels compile once into ~/.cache/vla/warp (~30 s cold, ~1 s warm).
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

pytest.importorskip("mujoco_warp", reason="the 'warp' extra (mujoco-warp, warp-lang) is not installed")

from vla.envs import registry, tabletop  # noqa: E402
from vla.envs.tabletop import scene  # noqa: E402
from vla.envs.tabletop.batched import BatchedTabletopEnv, WorldEpisode  # noqa: E402
from vla.envs.tabletop.batched.sim import warp_scene_model  # noqa: E402
from vla.envs.tabletop.batched.state import mat_to_quat  # noqa: E402
from vla.envs.tabletop.batched.success import FAMILY_CODES, TaskCodes, WorldState, success  # noqa: E402
from vla.envs.tabletop.batched.views import HostSnapshot, WorldView  # noqa: E402
from vla.envs.tabletop.tasks import FAMILIES, TASKS  # noqa: E402
from vla.features import STATE_KEY, camera_key  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
RED = camera_key("front")


@pytest.fixture(scope="module")
def batch():
    env = BatchedTabletopEnv(3, device="cpu", image_size=48)
    yield env
    env.close()


def classic_env(task: str, **options):
    return tabletop.make(task, image_size=48, **options)


def test_seeds_give_identical_initial_states_and_instructions(batch):
    # Tasks with layout checks, a tighter y range, an open drawer, and the held-out phrasings.
    episodes = [
        WorldEpisode("push-green", 123, "train"),
        WorldEpisode("close-drawer", 7, "heldout"),
        WorldEpisode("stack-red-on-blue", 40_001, "train"),
    ]
    batch.reset_worlds([0, 1, 2], episodes)
    observation = batch.observation()
    for world, episode in enumerate(episodes):
        env = classic_env(episode.task, phrasing=episode.phrasing)
        obs, _ = env.reset(seed=episode.seed)
        assert batch.instructions[world] == obs["instruction"]
        np.testing.assert_allclose(batch.sim.field("qpos")[world].numpy(), env.data.qpos, atol=1e-6)
        np.testing.assert_allclose(batch.sim.body_pos[world].numpy(), env.model.body_pos, atol=1e-6)
        # Geoms fixed to moved bodies (buttons, plate, cabinet) included: Warp never recomputes them.
        np.testing.assert_allclose(batch.sim.field("geom_xpos")[world].numpy(), env.data.geom_xpos, atol=1e-5)
        np.testing.assert_allclose(observation[STATE_KEY][world].numpy(), obs[STATE_KEY], atol=1e-5)
        assert int(batch.max_steps[world]) == env.max_steps
        env.close()


def test_same_actions_give_the_same_states_within_float32_tolerance(batch):
    episodes = [WorldEpisode("pick-red", 5), WorldEpisode("open-drawer", 9), WorldEpisode("reach-blue", 11)]
    batch.reset_worlds([0, 1, 2], episodes)
    envs = [classic_env(e.task, cameras=[]) for e in episodes]
    observations = [env.reset(seed=e.seed)[0] for env, e in zip(envs, episodes, strict=True)]
    experts = [tabletop.make_expert(env) for env in envs]
    for _ in range(25):  # approach, grasp, pull: the expert drives the classic envs
        actions = np.stack([expert(obs) for expert, obs in zip(experts, observations, strict=True)])
        observations = [env.step(a)[0] for env, a in zip(envs, actions, strict=True)]
        step = batch.step(actions)
    state = batch.observation()[STATE_KEY].numpy()
    for world, env in enumerate(envs):
        classic = observations[world][STATE_KEY]
        np.testing.assert_allclose(state[world, 13:16], classic[13:16], atol=1e-3)  # end-effector (m)
        np.testing.assert_allclose(state[world, :6], classic[:6], atol=2e-2)  # arm joints (rad)
        for colour in scene.COLOURS:
            warp_block = batch.sim.field("xpos")[world, env.ids.block_body[colour]].numpy()
            np.testing.assert_allclose(warp_block, env.block_pos(colour), atol=1e-3)
        assert bool(step.success[world]) == env._success()
        env.close()


def test_masked_reset_resets_only_the_chosen_worlds(batch):
    batch.reset_worlds([0, 1, 2], [WorldEpisode("reach-red", s) for s in (1, 2, 3)])
    for _ in range(3):
        batch.step(np.tile([1.0, 0.5, -0.5, 1.0], (3, 1)))
    before = {name: batch.sim.field(name).clone() for name in ("qpos", "qvel", "xpos", "ctrl")}
    steps_before = batch.steps.clone()
    batch.reset_worlds([1], [WorldEpisode("press-green", 77)])
    for name, value in before.items():
        now = batch.sim.field(name)
        assert torch.equal(now[[0, 2]], value[[0, 2]]), f"{name} of the other worlds changed"
        assert not torch.equal(now[1], value[1]), f"{name} of the reset world did not change"
    assert batch.steps.tolist() == [int(steps_before[0]), 0, int(steps_before[2])]
    env = classic_env("press-green", cameras=[])
    env.reset(seed=77)
    np.testing.assert_allclose(batch.sim.field("qpos")[1].numpy(), env.data.qpos, atol=1e-6)
    assert float(batch.sim.field("qvel")[1].abs().max()) == 0.0
    assert batch.tasks[1].name == "press-green" and batch.tasks[0].name == "reach-red"


def red_pixels(image: np.ndarray) -> np.ndarray:
    image = image.astype(int)
    return (image[..., 0] > 150) & (image[..., 1] < 90) & (image[..., 2] < 90)


def test_images_have_the_right_shape_and_show_a_moved_block(batch):
    from vla.envs.tabletop.episode_start import episode_rng, sample_episode_start

    task = TASKS["reach-red"]
    start = sample_episode_start(task, episode_rng(3), task.train_phrasings)
    batch.start_worlds([0, 1, 2], [task] * 3, [start] * 3)
    first = batch.observation()
    for key in (camera_key("front"), camera_key("wrist")):
        assert first[key].dtype == torch.uint8 and tuple(first[key].shape) == (3, 48, 48, 3)
    assert torch.equal(first[RED][0], first[RED][1])  # same state, same image
    # Move world 0's red block 12 cm to the robot's left (clear of the other objects: checked below).
    positions = dict(start.layout.positions)
    positions["block_red"] = positions["block_red"] + np.array([0.0, 0.12])
    moved = type(start)(type(start.layout)(positions, start.layout.cabinet_x, 0.0), start.instruction)
    batch.start_worlds([0], [task], [moved])
    second = batch.observation()
    before, after = red_pixels(first[RED][0].numpy()), red_pixels(second[RED][0].numpy())
    assert before.sum() > 5 and after.sum() > 5
    assert (before & ~after).sum() > 5, "pixels where the block was still show it"
    assert (after & ~before).sum() > 5, "pixels where the block went do not show it"
    assert torch.equal(second[RED][1], first[RED][1]), "another world's image changed"
    # Stepping moves the arm: the wrist camera's image follows (the scene's bounding volumes refit).
    batch.step(np.tile([0.0, 0.0, -1.0, 1.0], (3, 1)))
    third = batch.observation()
    assert not torch.equal(third[camera_key("wrist")][2], first[camera_key("wrist")][2])


def test_batched_success_tests_agree_with_the_classic_predicates():
    """Random states straddling every threshold: the torch tests and tasks.py's predicates agree."""
    model = warp_scene_model()
    ids = scene.SceneIds.of(model)
    rng = np.random.default_rng(0)
    n = 4000
    qpos = np.zeros((n, model.nq))
    xpos = np.zeros((n, model.nbody, 3))
    site_xpos = np.zeros((n, model.nsite, 3))
    ee = rng.uniform([0.3, -0.2, 0.0], [0.5, 0.2, 0.2], (n, 3))
    blocks = ee[:, None] + rng.normal(0, 0.04, (n, 3, 3))
    blocks[:, :, 2] = rng.uniform(0.0, 0.16, (n, 3))
    blocks[:, 2] = blocks[:, 1] + np.c_[rng.normal(0, 0.02, (n, 2)), rng.uniform(0.02, 0.08, n)]  # stacks
    initial = blocks - np.c_[np.zeros(n), rng.uniform(0, 0.16, n), np.zeros(n)][:, None]
    plate = blocks[:, 0] + np.c_[rng.normal(0, 0.04, (n, 2)), np.zeros(n)]
    site_xpos[:, ids.ee_site] = ee
    for c, colour in enumerate(scene.COLOURS):
        xpos[:, ids.block_body[colour]] = blocks[:, c]
        qpos[:, ids.button_qpos[colour]] = rng.uniform(0, scene.BUTTON_TRAVEL, n)
    xpos[:, ids.plate_body] = plate
    qpos[:, ids.drawer_qpos] = rng.uniform(0, 0.15, n)
    qpos[:, ids.finger_qpos] = rng.uniform(0.015, 0.05, (n, 1))
    snapshot = HostSnapshot(qpos, xpos, site_xpos, initial)
    tasks = [list(TASKS.values())[i % len(TASKS)] for i in range(n)]
    state = WorldState(*(torch.as_tensor(a) for a in (
        ee, blocks, initial, qpos[:, [ids.button_qpos[c] for c in scene.COLOURS]], plate,
        qpos[:, ids.drawer_qpos], qpos[:, ids.finger_qpos].sum(-1))))  # fmt: skip
    batched = success(state, TaskCodes.of(tasks, torch.device("cpu"))).numpy()
    classic = np.array([
        bool(FAMILIES[t.family].success(WorldView(i, ids, None, "ee_delta", t, snapshot=snapshot), t))  # type: ignore[arg-type]
        for i, t in enumerate(tasks)
    ])  # fmt: skip
    assert (batched == classic).all(), [tasks[i].name for i in np.flatnonzero(batched != classic)[:5]]
    families = np.array([FAMILY_CODES[t.family] for t in tasks])
    for family, code in FAMILY_CODES.items():  # each test was exercised both ways
        assert 0 < classic[families == code].mean() < 1, family


def test_mat_to_quat_matches_mujoco_signs():
    rng = np.random.default_rng(1)
    quats = rng.normal(size=(500, 4))
    quats[::3, 0] = 0.0  # half turns: the branches other than the trace one
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    mats, expected = np.zeros((500, 9)), np.zeros((500, 4))
    for i, q in enumerate(quats):
        mujoco.mju_quat2Mat(mats[i], q)
        mujoco.mju_mat2Quat(expected[i], mats[i])
    np.testing.assert_allclose(
        mat_to_quat(torch.as_tensor(mats).reshape(-1, 3, 3)).numpy(), expected, atol=1e-12
    )


def test_the_excluded_contact_pair_is_inert_in_classic_mujoco():
    """warp_scene_model drops the base/link1 contact; classic MuJoCo moves the same with or without it."""
    env = classic_env("pick-green", cameras=[])
    obs, _ = env.reset(seed=4)
    variant = warp_scene_model()
    variant.body_pos[:] = env.model.body_pos
    data = mujoco.MjData(variant)
    data.qpos[:], data.ctrl[:] = env.data.qpos, env.data.ctrl
    expert = tabletop.make_expert(env)
    for _ in range(40):
        env.step(expert(obs))
        data.ctrl[:] = env.data.ctrl
        mujoco.mj_step(variant, data, nstep=10)
    assert np.abs(data.qpos - env.data.qpos).max() < 1e-3
    env.close()


def test_backend_is_an_env_option_and_warp_gives_a_tabletop_env():
    assert {"backend", "device"} <= set(registry.suite_options("tabletop"))
    env = tabletop.make("reach-red", backend="warp", device="cpu", cameras=["front"], image_size=32)
    assert isinstance(env, tabletop.TabletopEnv) and env._batch is None  # built at the first reset only
    obs, info = env.reset(seed=2)
    classic = classic_env("reach-red", cameras=["front"])
    classic_obs, _ = classic.reset(seed=2)
    assert obs["instruction"] == classic_obs["instruction"]
    np.testing.assert_allclose(obs[STATE_KEY], classic_obs[STATE_KEY], atol=1e-5)
    expert, done = tabletop.make_expert(env), False
    while not done:
        obs, _, terminated, truncated, info = env.step(expert(obs))
        done = terminated or truncated
    assert info["success"] and obs[camera_key("front")].shape == (32, 32, 3)
    with pytest.raises(ValueError, match="backend=warp"):
        tabletop.make("reach-red", device="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        tabletop.make("reach-red", backend="gpu")
    env.close()
    classic.close()
