"""Benchmark the simulators side by side: classic MuJoCo in worker processes vs MuJoCo Warp batched.

Prints env-steps/s and rendered frames/s (two cameras) for the classic backend the way ``vla eval``
runs it (one ``EnvPool`` worker process per slot, every slot stepped in lockstep) and for the warp
backend at several world counts (one process, one device), each with its ratio to classic, and the
machine. Random actions in [-1, 1]; one task (``--task``) in every slot; construction, kernel loading
and the first steps are not timed. Warp's kernel cache: ~/.cache/vla/warp (or WARP_CACHE_PATH).

    python scripts/bench_sim.py                                   # CPU: 2 workers; 2, 4, 8 worlds
    python scripts/bench_sim.py --device cuda --worlds 256 1024 4096 8192
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from vla.envs import tabletop  # noqa: E402
from vla.envs.tabletop.batched import WorldEpisode  # noqa: E402
from vla.evaluation.vector import EnvPool  # noqa: E402
from vla.machine import describe_machine  # noqa: E402

CAMERAS = ["front", "wrist"]


def bench_classic(task: str, workers: int, steps: int, image_size: int) -> float:
    """Env-steps/s of ``workers`` classic envs in worker processes (as ``vla eval`` steps them)."""
    env_cfg = {"suite": "tabletop", "image_size": image_size, "cameras": CAMERAS}
    rng = np.random.default_rng(0)
    slots = list(range(workers))
    with EnvPool(env_cfg, workers) as pool:
        for slot in slots:
            pool.send_reset(slot, task, slot, "train", False)
        pool.collect(slots)

        def step_all() -> None:
            for slot in slots:
                pool.send_step(slot, rng.uniform(-1, 1, 4).astype(np.float32))
            for slot, result in pool.collect(slots).items():
                if result.terminated or result.truncated:
                    pool.send_reset(slot, task, slot, "train", False)
                    pool.collect([slot])

        step_all()  # warm-up: each worker's GL context
        started = time.perf_counter()
        for _ in range(steps):
            step_all()
        return workers * steps / (time.perf_counter() - started)


def bench_warp(task: str, worlds: int, steps: int, image_size: int, device: str) -> tuple[float, float, str]:
    """(env-steps/s with both cameras rendered, physics-only env-steps/s, device) for ``worlds`` worlds."""
    env = tabletop.make_batched(worlds, device=device, image_size=image_size, cameras=CAMERAS)
    env.reset_worlds(list(range(worlds)), [WorldEpisode(task, seed) for seed in range(worlds)])
    generator = torch.Generator(device=env.device).manual_seed(0)

    def actions() -> torch.Tensor:
        return torch.rand((worlds, 4), generator=generator, device=env.device) * 2 - 1

    def timed(render: bool) -> float:
        for _ in range(2):  # warm-up: kernels loaded, CUDA graph captured
            env.step(actions())
            env.observation()
        _synchronize(env.device)
        started = time.perf_counter()
        for _ in range(steps):
            env.step(actions())
            if render:
                env.observation()
        _synchronize(env.device)
        return worlds * steps / (time.perf_counter() - started)

    return timed(render=True), timed(render=False), env.sim.device.warp


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", default="pick-red")
    parser.add_argument("--device", default="auto", help="warp device: auto, cpu, cuda")
    parser.add_argument("--worlds", type=int, nargs="+", default=None, help="warp world counts")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="classic processes")
    parser.add_argument("--steps", type=int, default=20, help="timed control steps per measurement")
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args(argv)
    on_gpu = args.device != "cpu" and torch.cuda.is_available()
    worlds = args.worlds or ([256, 1024, 4096] if on_gpu else [2, 4, 8])

    print(f"machine: {describe_machine()}")
    print(f"task {args.task}, two {args.image_size}x{args.image_size} cameras (front, wrist), "
          f"random actions, {args.steps} timed control steps (10 physics steps each)")  # fmt: skip
    classic = bench_classic(args.task, args.workers, args.steps, args.image_size)
    print(f"{'backend':28s} {'env-steps/s':>12s} {'frames/s':>10s} {'vs classic':>11s} {'physics only':>13s}")
    print(
        f"{f'classic, {args.workers} processes':28s} {classic:12.1f} {classic * len(CAMERAS):10.1f} {1.0:10.2f}x"
    )
    for count in worlds:
        rendered, physics, where = bench_warp(args.task, count, args.steps, args.image_size, args.device)
        name = f"warp {where}, {count} worlds"
        print(f"{name:28s} {rendered:12.1f} {rendered * len(CAMERAS):10.1f} {rendered / classic:10.2f}x "
              f"{physics:12.1f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
