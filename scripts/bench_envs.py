"""Benchmark the environments: env steps/s with two 128x128 cameras, fast vs default rendering.

For every tabletop task (or ``--tasks``) it prints steps/s on one core with the suite's fast render
settings (no shadows, no multisampling, no reflections) beside the same env built with MuJoCo's
default render quality, and the ratio. ``--metaworld`` measures a sample of Meta-World tasks the
same way through ``vla.envs.registry`` (skipped with a message when the adapter cannot be imported).
``--expert-episodes N`` instead prints each tabletop task's scripted-expert success over N seeds.

    python scripts/bench_envs.py                       # all tabletop tasks, speed
    python scripts/bench_envs.py --metaworld           # plus three Meta-World tasks
    python scripts/bench_envs.py --expert-episodes 100 # expert success per task (no rendering)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

from vla.envs import tabletop  # noqa: E402
from vla.machine import describe_machine  # noqa: E402

METAWORLD_SAMPLE = ["reach-v3", "push-v3", "pick-place-v3"]


def steps_per_second(make_env: Callable[[], gym.Env], steps: int, seed: int = 0) -> tuple[float, float]:
    """(wall-clock steps/s, CPU steps/s) over ``steps`` random actions.

    Resets are included, construction and the first render are not. CPU steps/s counts this
    process's CPU time (GL threads included), so it stays meaningful on a busy shared machine.
    """
    env = make_env()
    try:
        env.action_space.seed(seed)
        env.reset(seed=seed)
        env.step(env.action_space.sample())  # warm-up: GL context creation is not part of a step
        start, cpu_start = time.perf_counter(), time.process_time()
        for i in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset(seed=seed + i + 1)
        return steps / (time.perf_counter() - start), steps / (time.process_time() - cpu_start)
    finally:
        env.close()


HEADER = "{:24s} fast steps/s (wall, cpu)   default steps/s (wall, cpu)   ratio (wall, cpu)"


def row(name: str, fast: tuple[float, float], slow: tuple[float, float]) -> str:
    return (
        f"{name:24s} {fast[0]:10.1f} {fast[1]:10.1f}     {slow[0]:12.1f} {slow[1]:10.1f}     "
        f"{fast[0] / slow[0]:8.1f}x {fast[1] / slow[1]:6.1f}x"
    )


def bench_tabletop(tasks: list[str], steps: int, baseline_steps: int) -> None:
    print(HEADER.format("task"))
    fast_all, slow_all = [], []
    options = {"image_size": 128, "cameras": ["front", "wrist"]}
    for task in tasks:
        fast = steps_per_second(lambda t=task: tabletop.make(t, **options), steps)
        slow = steps_per_second(lambda t=task: tabletop.make(t, fast_render=False, **options), baseline_steps)
        fast_all.append(fast)
        slow_all.append(slow)
        print(row(task, fast, slow), flush=True)
    print(row("mean", tuple(np.mean(fast_all, axis=0)), tuple(np.mean(slow_all, axis=0))))


def bench_metaworld(steps: int, baseline_steps: int) -> None:
    try:
        from vla.envs import metaworld_render, registry
    except Exception as error:  # noqa: BLE001 - any import failure means: skip, and say why
        print(f"Meta-World skipped: cannot import the adapter ({type(error).__name__}: {error})")
        return
    cfg = {"suite": "metaworld", "image_size": 128, "cameras": {"front": "corner2", "wrist": "gripperPOV"}}
    fast_settings = metaworld_render.apply_fast_render_settings
    print(HEADER.format("metaworld task"))
    for task in METAWORLD_SAMPLE:
        try:
            fast = steps_per_second(lambda t=task: registry.make_env(cfg, t), steps)
            # The baseline: the same env with MuJoCo's default render settings left in place.
            metaworld_render.apply_fast_render_settings = lambda model: None
            try:
                slow = steps_per_second(lambda t=task: registry.make_env(cfg, t), baseline_steps)
            finally:
                metaworld_render.apply_fast_render_settings = fast_settings
        except Exception as error:  # noqa: BLE001 - one broken task must not hide the others
            print(f"{task:24s} failed: {type(error).__name__}: {error}")
            continue
        print(row(task, fast, slow), flush=True)


def expert_success(tasks: list[str], episodes: int, noise_std: float) -> None:
    """Per-task success of the scripted expert over seeds 0..episodes-1 (no rendering: same physics)."""
    print(f"{'task':24s} {'success':>9s} {'rate':>6s} {'mean steps':>11s} {'max steps':>10s}")
    rates = []
    for task in tasks:
        env = tabletop.make(task, cameras=[])
        expert = tabletop.make_expert(env, noise_std=noise_std, seed=0)
        successes, lengths = 0, []
        for seed in range(episodes):
            obs, info = env.reset(seed=seed)
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(expert(obs))
                done = terminated or truncated
            successes += bool(info["success"])
            lengths.append(info["steps"])
        rates.append(successes / episodes)
        print(
            f"{task:24s} {successes:4d}/{episodes:<4d} {successes / episodes:6.2f} {np.mean(lengths):11.1f} "
            f"{max(lengths):10d}",
            flush=True,
        )
    print(f"{'mean':24s} {'':9s} {np.mean(rates):6.3f}; lowest {min(rates):.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="*", default=None, help="tabletop tasks (default: all)")
    parser.add_argument("--steps", type=int, default=200, help="steps per task with fast rendering")
    parser.add_argument(
        "--baseline-steps", type=int, default=20, help="steps per task with default rendering"
    )
    parser.add_argument("--metaworld", action="store_true", help="also measure a sample of Meta-World tasks")
    parser.add_argument("--all-cores", action="store_true", help="do not pin the process to one core")
    parser.add_argument(
        "--expert-episodes", type=int, default=0, help="report expert success instead of speed"
    )
    parser.add_argument(
        "--noise-std", type=float, default=0.0, help="expert action noise (with --expert-episodes)"
    )
    args = parser.parse_args(argv)

    if not args.all_cores:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, GL threads included
    tasks = tabletop.task_names(args.tasks or None)
    print(f"machine: {describe_machine()}")
    if args.expert_episodes:
        expert_success(tasks, args.expert_episodes, args.noise_std)
        return 0
    print(
        f"two 128x128 cameras (front, wrist), random actions, {args.steps} steps fast / "
        f"{args.baseline_steps} steps default per task"
    )
    bench_tabletop(tasks, args.steps, args.baseline_steps)
    if args.metaworld:
        bench_metaworld(max(args.steps // 4, 10), max(args.baseline_steps // 4, 3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
