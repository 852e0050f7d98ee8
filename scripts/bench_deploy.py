"""Benchmark the deployment path: the simulated robot at 50 Hz, in-process vs through ``vla serve``.

    python scripts/bench_deploy.py [checkpoint=<dir>] [hz=50] [steps=500] [task=reach-red] [image_size=64]
                                   [threads=N] [export=torchscript|torch.export] [baseline_client=<module> [pairs=1]]

``checkpoint`` may be any policy ``vla serve`` accepts (:mod:`vla.policies.sources`). Without one, a real
``tiny`` policy (policies/tiny.yaml) with random weights and the tabletop env's features is written
once by the training code (:mod:`vla.deploy.untrained`) and reused: latency depends on the
architecture, not on what was learned. ``threads`` sets ``torch.set_num_threads`` in both processes
(on a 2-core machine the inference thread competes with the simulator). ``export=`` also runs the
exported program of the same policy in-process (:mod:`vla.policies.export`), side by side.
``baseline_client=<module>`` also runs the loop through the same server with ``<module>.RemoteInference``
(an importable module, e.g. an earlier client on ``PYTHONPATH``) and prints both clients' per-chunk
overhead and round trip side by side (p50 and p99 over all their chunks); ``pairs=N`` alternates the two
N times (ours first, then the baseline first, ...) so that a drifting machine load hits both alike.

Prints the machine, then per mode: achieved rate, period jitter p50/p99, overruns, steps held for
lack of an action (inference overruns) and inference latency; then the server's round-trip overhead
and the exported program's latency, each as a ratio against in-process eager inference (same
policy, same run). The server's overhead per chunk is also given paired, chunk by chunk: the round
trip the client saw (submit to reply decoded) minus that chunk's own forward time as the server's
inference thread measured it (``infer_ms``), as p50/p90/p99 over all chunks (``steps`` sets how many).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vla.machine import describe_machine

os.environ.setdefault("MUJOCO_GL", "egl")


def _set_threads(options: dict[str, str]) -> int:
    import torch

    if "threads" in options:
        torch.set_num_threads(int(options["threads"]))
    return torch.get_num_threads()


def _untrained_tiny(robot: Any, image_size: int) -> Path:
    """A random-weight ``tiny`` checkpoint with the robot's features (written once, then reused)."""
    from vla.deploy.untrained import write_untrained_checkpoint

    cameras = robot.features.cameras
    state_dim, action_dim = len(robot.features.state_names), len(robot.features.action_names)
    folder = f"tiny_{'-'.join(cameras)}_{image_size}px_s{state_dim}_a{action_dim}"
    out = Path(tempfile.gettempdir()) / "vla_bench_deploy" / folder
    print(f"writing (or reusing) an untrained tiny checkpoint with the robot's features in {out}", flush=True)
    return write_untrained_checkpoint(
        out, cameras=cameras, image_size=image_size, state_dim=state_dim, action_dim=action_dim
    )


def _serve(options: dict[str, str], port_queue: Any) -> None:
    """Server process: the same policy behind ``PolicyServer`` (a separate process, as deployed)."""
    import asyncio

    from vla.deploy.server import PolicyServer
    from vla.policies.sources import load_stored_policy

    _set_threads(options)

    async def run() -> None:
        ready = asyncio.get_running_loop().create_future()
        ready.add_done_callback(lambda f: port_queue.put(f.result()))
        await PolicyServer(load_stored_policy(options["checkpoint"], "cpu")).run("127.0.0.1", 0, ready)

    asyncio.run(run())


def _run(
    robot: Any, requester: Any, hz: float, steps: int, replan_every: int, chunk_size: int
) -> dict[str, Any]:
    from vla.deploy.inference import ChunkPlanner
    from vla.deploy.loop import LoopConfig, run_loop
    from vla.deploy.session import auto_prefetch
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
    summary["round_trip_samples_ms"] = [latency * 1e3 for latency in planner.latencies_s]
    if planner.server_timings and len(planner.server_timings) == len(planner.latencies_s):
        # Per chunk: the round trip the client saw minus that chunk's own server-side forward time.
        # (A difference of medians would mix two noisy distributions; this pairs them.)
        overhead = [
            latency * 1e3 - timing["infer_ms"]
            for latency, timing in zip(planner.latencies_s, planner.server_timings, strict=True)
        ]
        summary["overhead_samples_ms"] = overhead
        summary["overhead_ms"] = {
            "p50": float(np.median(overhead)),
            "p90": float(np.percentile(overhead, 90)),
            "p99": float(np.percentile(overhead, 99)),
            "n": len(overhead),
        }
    return summary


def _line(name: str, s: dict[str, Any]) -> str:
    j, lat = s["period_jitter_ms"], s["inference_latency_ms"]
    return (
        f"{name:<12} {s['achieved_hz']:8.2f} Hz  jitter p50 {j['p50']:.3f} p99 {j['p99']:.3f} ms  overruns "
        f"{s['overruns']:3d}  held (no action) {s['holds'].get('no_action', 0):3d}  inference p50 {lat['p50']:.2f} "
        f"p99 {lat['p99']:.2f} ms (n={lat['n']}, prefetch {s['prefetch']})"
    )


def main(argv: list[str]) -> int:
    options = {key.lstrip("-"): value for key, value in (arg.split("=", 1) for arg in argv)}
    hz, steps = float(options.get("hz", 50)), int(options.get("steps", 500))
    from vla.deploy.robot import declared_features
    from vla.deploy.sim_robot import SimRobot
    from vla.policies.sources import load_stored_policy
    from vla_client.remote import RemoteInference
    from vla_client.requester import ThreadedInference

    threads = _set_threads(options)
    size = int(options.get("image_size", 64))
    env_cfg = {"suite": "tabletop", "image_size": size, "max_steps": 100_000, "terminate_on_success": False}
    robot = SimRobot.from_config(env_cfg, options.get("task", "reach-red"), seed=1_000_000)
    robot.connect()
    stand_in = "checkpoint" not in options
    if stand_in:
        options["checkpoint"] = str(_untrained_tiny(robot, size))
    policy = load_stored_policy(options["checkpoint"], "cpu")
    features, names = declared_features(robot)
    # The untrained stand-in comes from a synthetic store whose dimensions are named q0.., a0..:
    # only its shapes are the robot's, so only they are compared.
    policy.spec.check_features(features, None if stand_in else names, source="the robot")
    chunk_size = int(policy.spec.chunk_size)
    replan_every = int(options.get("replan_every", max(1, chunk_size // 2)))
    print(f"machine: {describe_machine()}; torch threads {threads}")
    print(f"policy: {options['checkpoint']}, chunk {chunk_size}, replan every {replan_every}; "
          f"robot: tabletop sim {size}x{size}, {hz:g} Hz, {steps} steps")  # fmt: skip

    local = ThreadedInference(policy.predict_chunk)
    in_process = _run(robot, local, hz, steps, replan_every, chunk_size)
    local.close()
    print(_line("in-process", in_process), flush=True)
    local_ms = in_process["inference_latency_ms"]["p50"]

    if options.get("export"):
        from vla.policies.export import export_policy, load_exported_policy

        out = Path(tempfile.mkdtemp(prefix="vla_bench_export_"))
        exported = load_exported_policy(export_policy(options["checkpoint"], out, format=options["export"]))
        local = ThreadedInference(exported.predict_chunk)
        through_export = _run(robot, local, hz, steps, replan_every, chunk_size)
        local.close()
        print(_line(options["export"][:12], through_export), flush=True)
        export_ms = through_export["inference_latency_ms"]["p50"]
        print(f"exported ({options['export']}) p50 {export_ms:.2f} ms vs eager {local_ms:.2f} ms "
              f"(ratio {export_ms / local_ms:.2f}x)", flush=True)  # fmt: skip

    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(options, ports), daemon=True)
    server.start()
    clients: dict[str, Any] = {"server": RemoteInference}
    if options.get("baseline_client"):
        import importlib  # a module named on the command line, not one of ours

        clients[options["baseline_client"]] = importlib.import_module(
            options["baseline_client"]
        ).RemoteInference
    results: dict[str, dict[str, Any]] = {}
    samples: dict[str, dict[str, list[float]]] = {
        name: {"overhead": [], "round trip": []} for name in clients
    }
    try:
        url = f"ws://127.0.0.1:{ports.get(timeout=300)}"
        for pair in range(int(options.get("pairs", 1)) if len(clients) > 1 else 1):
            # One server for every client (same conditions); the order alternates from pair to pair.
            for name in list(clients) if pair % 2 == 0 else list(reversed(clients)):
                remote = clients[name](url)
                result = _run(robot, remote, hz, steps, replan_every, chunk_size)
                remote.close()
                results.setdefault(name, result)
                samples[name]["overhead"] += result.get("overhead_samples_ms", [])
                samples[name]["round trip"] += result["round_trip_samples_ms"]
    finally:
        server.terminate()
        robot.disconnect()
    through_server = results["server"]
    print(_line("server", through_server))
    remote_ms = through_server["inference_latency_ms"]["p50"]
    server_infer = through_server["server_timing_ms"].get("infer_ms", float("nan"))
    print(f"server round trip p50 {remote_ms:.2f} ms vs in-process {local_ms:.2f} ms: overhead {remote_ms - local_ms:+.2f} ms "
          f"per chunk (ratio {remote_ms / local_ms:.2f}x); round trip minus server-side inference {remote_ms - server_infer:.2f} ms "
          f"(server decode {through_server['server_timing_ms'].get('decode_ms', float('nan')):.3f}, encode "
          f"{through_server['server_timing_ms'].get('encode_ms', float('nan')):.3f} ms)")  # fmt: skip
    if "overhead_ms" in through_server:
        o, t = through_server["overhead_ms"], through_server["server_timing_ms"]
        print(f"server overhead per chunk (round trip minus that chunk's server-side forward): p50 {o['p50']:.2f} "
              f"p90 {o['p90']:.2f} p99 {o['p99']:.2f} ms (n={o['n']}; server medians decode {t.get('decode_ms', float('nan')):.3f}, "
              f"queue {t.get('queue_ms', float('nan')):.3f}, encode {t.get('encode_ms', float('nan')):.3f} ms); goal p50 < 2 ms")  # fmt: skip
    for name, baseline in results.items():
        if name != "server":
            print(_line(name[:12], baseline))
            print(_client_comparison(name, samples["server"], samples[name]))
    return 0


def _client_comparison(name: str, ours: dict[str, list[float]], theirs: dict[str, list[float]]) -> str:
    """vla_client against another client through the same server: overhead and round trip, p50 and p99."""
    parts = []
    for label in ("overhead", "round trip"):
        if not ours[label] or not theirs[label]:
            continue
        figures = []
        for q in (50, 99):
            a, b = float(np.percentile(ours[label], q)), float(np.percentile(theirs[label], q))
            figures.append(f"p{q} {a:.2f} vs {b:.2f} ms ({a - b:+.2f})")
        parts.append(f"{label} per chunk {', '.join(figures)} (n={len(ours[label])} vs {len(theirs[label])})")
    return f"vla_client vs {name}: " + "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
