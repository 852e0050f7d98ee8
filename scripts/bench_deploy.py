"""Benchmark the deployment path: the simulated robot at 50 Hz, in-process vs through ``vla serve``.

    python scripts/bench_deploy.py [checkpoint=<dir>] [hz=50] [steps=500] [task=reach-red] [image_size=64]

With a checkpoint the policy is that checkpoint (the ``tiny`` one is the target). Without one, a
stand-in policy with the spec of the tabletop env and a fixed compute cost (``synthetic_ms``, numpy
matmuls that hold the GIL part of the time, like a small model's Python overhead) is used: latency is
what matters here, not actions. Prints the machine, then per mode: achieved rate, period jitter
p50/p99, overruns, steps held for lack of an action (inference overruns), inference latency, and the
server's round-trip overhead over in-process inference (same policy, same run).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")


@dataclass(frozen=True)
class SyntheticSpec:
    camera_keys: tuple[str, ...]
    image_shape: tuple[int, int, int]
    state_dim: int
    action_dim: int = 4
    n_obs_steps: int = 1
    chunk_size: int = 16


class SyntheticPolicy:
    """Zero actions after ``compute_ms`` of matrix products (a stand-in with a realistic latency)."""

    def __init__(self, spec: SyntheticSpec, compute_ms: float) -> None:
        self.spec, self.compute_ms = spec, compute_ms
        self._a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)

    def predict_chunks(self, batch: dict[str, Any]) -> np.ndarray:
        end = time.perf_counter() + self.compute_ms / 1e3
        while time.perf_counter() < end:
            self._a = np.tanh(self._a @ self._a * 1e-2)
        return np.zeros((len(batch["instruction"]), self.spec.chunk_size, self.spec.action_dim), np.float32)

    def predict_chunk(self, observation: dict[str, Any]) -> np.ndarray:
        single = {k: v[None, None] if isinstance(v, np.ndarray) else [v] for k, v in observation.items()}
        return self.predict_chunks(single)[0]


def _policy(options: dict[str, str], spec: SyntheticSpec) -> Any:
    if "checkpoint" in options:
        from vla import load_policy

        return load_policy(options["checkpoint"], device="cpu")
    return SyntheticPolicy(spec, float(options.get("synthetic_ms", 15)))


def _serve(options: dict[str, str], spec: SyntheticSpec, port_queue: Any) -> None:
    """Server process: the same policy behind ``PolicyServer`` (a separate process, as deployed)."""
    import asyncio

    from vla.deploy.server import PolicyServer

    async def run() -> None:
        ready = asyncio.get_running_loop().create_future()
        ready.add_done_callback(lambda f: port_queue.put(f.result()))
        await PolicyServer(_policy(options, spec)).run("127.0.0.1", 0, ready)

    asyncio.run(run())


def _machine() -> str:
    from vla.deploy.cli import _machine as machine

    m = machine()
    return f"{m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['platform']}"


def _run(
    robot: Any, requester: Any, hz: float, steps: int, replan_every: int, chunk_size: int
) -> dict[str, Any]:
    from vla.deploy.cli import auto_prefetch
    from vla.deploy.inference import ChunkPlanner
    from vla.deploy.loop import LoopConfig, run_loop
    from vla.policies.executor import ChunkExecutor

    planner = ChunkPlanner(requester, ChunkExecutor(replan_every), prefetch=0)
    robot.start_episode(1_000_000)
    observation = robot.features.to_observation(robot.get_observation(), robot.instruction)
    for _ in range(3):  # warm up (first calls allocate), then size the prefetch from a warm latency
        planner.reset()
        planner.warmup(observation)
    planner.prefetch = auto_prefetch(float(np.median(planner.latencies_s[1:])), hz, replan_every, chunk_size)
    planner.latencies_s.clear()
    planner.server_timings.clear()
    summary = run_loop(
        robot, planner, robot.instruction, LoopConfig(hz=hz, max_steps=steps, status_stream=None)
    )
    summary["prefetch"] = planner.prefetch
    return summary


def _line(name: str, s: dict[str, Any]) -> str:
    j, lat = s["period_jitter_ms"], s["inference_latency_ms"]
    return (
        f"{name:<12} {s['achieved_hz']:8.2f} Hz  jitter p50 {j['p50']:.3f} p99 {j['p99']:.3f} ms  overruns "
        f"{s['overruns']:3d}  held (no action) {s['holds'].get('no_action', 0):3d}  inference p50 {lat['p50']:.2f} "
        f"p99 {lat['p99']:.2f} ms (n={lat['n']}, prefetch {s['prefetch']})"
    )


def main(argv: list[str]) -> int:
    options = dict(arg.split("=", 1) for arg in argv)
    hz, steps = float(options.get("hz", 50)), int(options.get("steps", 500))
    from vla.deploy.client import RemoteInference
    from vla.deploy.requester import ThreadedInference
    from vla.deploy.sim_robot import SimRobot
    from vla.features import STATE_KEY

    size = int(options.get("image_size", 64))
    env_cfg = {"suite": "tabletop", "image_size": size, "max_steps": 100_000, "terminate_on_success": False}
    robot = SimRobot.from_config(env_cfg, options.get("task", "reach-red"), seed=1_000_000)
    robot.connect()
    space = robot.env.observation_space
    spec = SyntheticSpec(tuple(k for k in space.spaces if k.startswith("observation.images.")), (size, size, 3),
                         int(space[STATE_KEY].shape[0]))  # fmt: skip
    policy = _policy(options, spec)
    chunk_size = int(policy.spec.chunk_size)
    replan_every = int(options.get("replan_every", max(1, chunk_size // 2)))
    print(f"machine: {_machine()}")
    synthetic = "synthetic (" + options.get("synthetic_ms", "15") + " ms/chunk)"
    print(f"policy: {options.get('checkpoint', synthetic)}, "
          f"chunk {chunk_size}, replan every {replan_every}; robot: tabletop sim {size}x{size}, {hz:g} Hz, {steps} steps")  # fmt: skip

    local = ThreadedInference(policy.predict_chunk)
    in_process = _run(robot, local, hz, steps, replan_every, chunk_size)
    local.close()
    print(_line("in-process", in_process), flush=True)

    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(options, spec, ports), daemon=True)
    server.start()
    try:
        remote = RemoteInference(f"ws://127.0.0.1:{ports.get(timeout=300)}")
        through_server = _run(robot, remote, hz, steps, replan_every, chunk_size)
        remote.close()
    finally:
        server.terminate()
        robot.disconnect()
    print(_line("server", through_server))
    local_ms = in_process["inference_latency_ms"]["p50"]
    remote_ms = through_server["inference_latency_ms"]["p50"]
    server_infer = through_server["server_timing_ms"].get("infer_ms", float("nan"))
    print(f"server round trip p50 {remote_ms:.2f} ms vs in-process {local_ms:.2f} ms: overhead {remote_ms - local_ms:+.2f} ms "
          f"per chunk (ratio {remote_ms / local_ms:.2f}x); round trip minus server-side inference {remote_ms - server_infer:.2f} ms "
          f"(server decode {through_server['server_timing_ms'].get('decode_ms', float('nan')):.3f}, encode "
          f"{through_server['server_timing_ms'].get('encode_ms', float('nan')):.3f} ms)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
