"""The MuJoCo Warp backend on a GPU: CUDA graph capture and a thousand worlds (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("mujoco_warp", reason="the 'warp' extra (mujoco-warp, warp-lang) is not installed")

from vla.envs.tabletop.batched import BatchedTabletopEnv, WorldEpisode  # noqa: E402
from vla.features import STATE_KEY, camera_key  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (Warp's GPU backend)"),
]
ACTIONS = np.array([0.5, -0.3, -0.6, 1.0], dtype=np.float32)


def rollout(env: BatchedTabletopEnv, graph: bool, steps: int = 10) -> torch.Tensor:
    env.sim.use_cuda_graph = graph
    env.reset_worlds(
        list(range(env.num_worlds)), [WorldEpisode("pick-red", s) for s in range(env.num_worlds)]
    )
    for _ in range(steps):
        env.step(np.tile(ACTIONS, (env.num_worlds, 1)))
    return env.observation()[STATE_KEY].clone()


def test_cuda_graph_replay_matches_plain_launches_and_stays_on_the_device() -> None:
    env = BatchedTabletopEnv(64, device="cuda", image_size=64)
    captured = rollout(env, graph=True)
    assert env.sim._graph is not None, "no CUDA graph was captured"
    plain = rollout(env, graph=False)
    # GPU runs are not bit-exact (atomic accumulation order), but agree to float32 noise here.
    torch.testing.assert_close(captured, plain, atol=2e-3, rtol=0)
    image = env.observation()[camera_key("front")]
    assert image.is_cuda and image.dtype == torch.uint8 and tuple(image.shape) == (64, 64, 64, 3)


def test_a_thousand_worlds_run_episodes_on_the_device() -> None:
    """Scale, not speed (scripts/bench_sim.py measures that): 1024 worlds step, render and reset."""
    env = BatchedTabletopEnv(1024, device="cuda", image_size=64)
    state = rollout(env, graph=True, steps=5)
    assert state.is_cuda and bool(torch.isfinite(state).all())
    env.reset_worlds(list(range(0, 1024, 2)), [WorldEpisode("reach-blue", s) for s in range(512)])
    assert env.steps[::2].eq(0).all() and env.steps[1::2].eq(5).all()
    env.sim.check_overflow()
