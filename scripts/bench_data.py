"""Training-sample throughput of the trajectory store against plain in-memory numpy arrays.

A realistic sample: 2 cameras at 96x96, 2 history frames, the state and a 16-step action chunk,
through the very DataLoader ``vla train`` reads (:func:`vla.data.loader.make_dataloader`: per-step
batches, the storage-locality order ``train.order=chunks``, forkserver workers) in one process and
with 2 workers; only the collate function differs (the store's collated windows here, the model-input
``Collator`` in training, which also tokenizes). Each loader is a function returning samples/s, so
another (e.g. LeRobotDataset) can be added to ``LOADERS``.

    python scripts/bench_data.py --store /tmp/vla_bench.zarr          # 100,000 frames (cached)
    python scripts/bench_data.py --store /tmp/vla_bench_quick.zarr --quick
    python scripts/bench_data.py --lerobot     # plus LeRobotDataset on the same episodes and windows

"Cold" emulates a store larger than the loader's memory: the page cache of every store file is
dropped (posix_fadvise DONTNEED) and each process's decoded-chunk cache is capped.

The generated store is rewritten when its chunking is not the one new stores get (vla.data.layout),
so the figures are always for the current layout. Its camera images (a colour gradient, a moving
disc and sensor noise of sigma 3, see vla.data.synthetic) do not compress with LZ4, so chunks are
stored raw and a read is a copy out of the page cache plus a CRC32C pass. Rendered tabletop
frames compress about 7.7x with LZ4, but decode at about 3 GB/s here, no faster than that copy,
so compressible images would not change the warm figures much.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from vla.data import TrajectoryDataset, TrajectoryStore, WindowSpec, make_dataloader
from vla.data.layout import time_chunk_frames
from vla.data.synthetic import synthetic_schema, write_synthetic_store
from vla.machine import describe_machine

SPEC = WindowSpec(n_obs_steps=2, horizon=16)
EPISODE_LENGTH = 200


def ensure_store(path: str, frames: int) -> TrajectoryStore:
    """The benchmark store (generated once, reused while it has the requested size)."""
    episodes = frames // EPISODE_LENGTH
    schema = synthetic_schema(image_size=96)
    try:
        store = TrajectoryStore.open(path)
        # Same size and the chunking new stores get (a store written by an older layout is rewritten).
        if store.num_episodes == episodes and all(
            store.array(f"data/{name}").chunks[0] == time_chunk_frames(spec)
            for name, spec in schema.features.items()
        ):
            return store
    except Exception:  # noqa: BLE001 - missing or different: regenerate
        pass
    print(f"generating {episodes * EPISODE_LENGTH} frames at {path} ...", flush=True)
    start = time.perf_counter()
    write_synthetic_store(path, episodes, EPISODE_LENGTH, schema, overwrite=True).close()
    print(f"  written in {time.perf_counter() - start:.0f} s", flush=True)
    return TrajectoryStore.open(path)


def warm_page_cache(path: str) -> float:
    """Read every store file once so "warm" means warm; returns the seconds it took."""
    start = time.perf_counter()
    for file in Path(path).rglob("*"):
        if file.is_file():
            with file.open("rb", buffering=0) as f:
                while f.read(16 << 20):
                    pass
    return time.perf_counter() - start


def drop_page_cache(path: str) -> None:
    for file in Path(path).rglob("*"):
        if file.is_file():
            fd = os.open(file, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def _rate(
    dataset: TrajectoryDataset, workers: int, batch_size: int, samples: int, order: str = "chunks"
) -> float:
    """Samples/s through the training loader (``order``: ``chunks`` or ``uniform``, as ``train.order``)."""
    steps = samples // batch_size + 2  # the first batch is not timed
    loader = make_dataloader(dataset, batch_size, steps=steps, order=order, num_workers=workers, seed=0)
    iterator = iter(loader)
    next(iterator)  # worker start-up and first reads are not throughput
    count, start = 0, time.perf_counter()
    for batch in iterator:
        count += len(batch["action"])
        if count >= samples:
            break
    return count / (time.perf_counter() - start)


def vla_store(args: argparse.Namespace, workers: int, cold: bool = False) -> float:
    """The trajectory store through the chunk cache (cold: page cache dropped, cache capped)."""
    if cold:
        drop_page_cache(args.store)
    cache = args.cold_cache_mb << 20 if cold else 512 << 20
    return _rate(
        TrajectoryDataset(args.store, SPEC, cache_bytes=cache), workers, args.batch_size, args.samples
    )


def vla_store_plain_shuffle(args: argparse.Namespace, workers: int) -> float:
    """The store read in ``train.order=uniform`` (no storage locality: why the default order exists)."""
    dataset = TrajectoryDataset(args.store, SPEC, cache_bytes=args.cold_cache_mb << 20)
    return _rate(
        dataset, workers, args.batch_size, max(args.batch_size * 4, args.samples // 20), order="uniform"
    )


def in_memory(args: argparse.Namespace, workers: int) -> float:
    """The limit: identical windows gathered from numpy arrays in RAM (the first episodes)."""
    if args.store not in _IN_MEMORY:
        episodes = list(range(min(args.memory_episodes, TrajectoryStore.open(args.store).num_episodes)))
        _IN_MEMORY[args.store] = TrajectoryDataset(args.store, SPEC, episodes=episodes, in_memory=True)
        _IN_MEMORY[args.store][0]  # load before forking workers, so they share the arrays
    return _rate(_IN_MEMORY[args.store], workers, args.batch_size, args.samples)


_IN_MEMORY: dict[str, TrajectoryDataset] = {}


LOADERS: dict[str, Callable[..., float]] = {"in-memory numpy": in_memory, "vla store": vla_store}


def lerobot_comparison(args: argparse.Namespace) -> None:
    """LeRobotDataset (its default video backend, then pyav) beside our store, on the same episodes.

    The first ``--lerobot-episodes`` episodes are converted once with ``vla convert to-lerobot``
    (AV1 video, lerobot's default) and cached beside the store; both loaders then draw the same
    windows (2 history frames per camera and state, 16 actions) from exactly those episodes.
    """
    from vla.interop.loader_bench import default_video_backend, measure_lerobot_dataset
    from vla.interop.to_lerobot import convert_to_lerobot

    episodes = list(range(args.lerobot_episodes))
    root = Path(f"{args.store}.lerobot-{len(episodes)}")
    start = time.perf_counter()
    convert_to_lerobot(args.store, root, "local/bench", max_episodes=len(episodes), progress=False)
    print(f"\nLeRobotDataset comparison: first {len(episodes)} episodes "
          f"({len(episodes) * EPISODE_LENGTH} frames; copy ready in {time.perf_counter() - start:.0f} s)")  # fmt: skip
    samples = args.lerobot_samples
    for workers in (0, 2):
        ours = _rate(
            TrajectoryDataset(args.store, SPEC, episodes=episodes), workers, args.batch_size, args.samples
        )
        for backend in (None, "pyav"):
            name = backend or f"default ({default_video_backend()})"
            try:
                theirs = measure_lerobot_dataset(root, "local/bench", SPEC.n_obs_steps, SPEC.horizon,
                                                 samples, workers, video_backend=backend)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - report the failure (e.g. torchcodec without FFmpeg)
                print(
                    f"[{workers} workers] LeRobotDataset {name:22s} failed: {type(exc).__name__}: {str(exc)[:120]}"
                )
                continue
            print(f"[{workers} workers] LeRobotDataset {name:22s} {theirs:9.1f} samples/s   vla store "
                  f"{ours:9.0f} samples/s   ratio {ours / theirs:6.1f}x (goal >= 20x)  load {_load()}", flush=True)  # fmt: skip


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def _spread(values: list[float], fmt: str = ".0f") -> str:
    return "[" + " ".join(format(v, fmt) for v in values) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store", default="/tmp/vla_bench_store.zarr", help="where the generated store is cached"
    )
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=20_000, help="samples timed per measurement")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--cold-cache-mb", type=int, default=64, help="decoded-chunk cache per process, cold runs"
    )
    parser.add_argument(
        "--memory-episodes", type=int, default=50, help="episodes loaded for the in-memory limit"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved in-memory/store pairs")
    parser.add_argument("--quick", action="store_true", help="a small store and short runs")
    parser.add_argument(
        "--lerobot", action="store_true", help="also measure LeRobotDataset on the same episodes"
    )
    parser.add_argument("--lerobot-episodes", type=int, default=10, help="episodes converted for LeRobot")
    parser.add_argument("--lerobot-samples", type=int, default=512, help="samples timed per LeRobot run")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.samples, args.memory_episodes = 10_000, 3_000, 20
    torch.set_num_threads(1)
    print(f"machine: {describe_machine()}; load average {_load()}")
    store = ensure_store(args.store, args.frames)
    size = sum(f.stat().st_size for f in Path(args.store).rglob("*") if f.is_file())
    raw = store.num_frames * sum(
        int(torch.tensor(s.shape).prod()) * torch.empty(0, dtype=getattr(torch, s.dtype)).element_size()
        for s in store.schema.features.values()
    )
    print(f"store: {store.num_frames} frames, {size / 2**30:.2f} GiB on disk ({size / raw:.2f} of raw)")
    print(
        f"sample: 2 cameras 96x96, {SPEC.n_obs_steps} history frames, state, {SPEC.horizon}-step actions; "
        f"batch {args.batch_size}, {args.samples} samples timed\n"
    )
    for workers in (0, 2):
        label = "1 process" if workers == 0 else f"{workers} workers"
        # Interleaved pairs, medians: the machine's load drifts, a ratio of neighbours does not.
        limits, warms = [], []
        print(f"({label}: page cache warmed in {warm_page_cache(args.store):.0f} s)", flush=True)
        for _ in range(args.repeats):
            limits.append(LOADERS["in-memory numpy"](args, workers))
            warms.append(LOADERS["vla store"](args, workers))
        ratios = [w / m for w, m in zip(warms, limits, strict=True)]
        limit, warm, ratio = (statistics.median(v) for v in (limits, warms, ratios))
        cold = vla_store(args, workers, cold=True)
        print(f"[{label}] in-memory numpy (limit)        {limit:9.0f} samples/s  {_spread(limits)}")
        print(
            f"[{label}] vla store, page cache warm     {warm:9.0f} samples/s  {_spread(warms)}  "
            f"ratio {ratio:.2f} (goal >= 0.50) {_spread(ratios, '.2f')}"
        )
        per_process = cold / max(workers, 1)
        print(
            f"[{label}] vla store, cold, {args.cold_cache_mb} MiB cache  {cold:9.0f} samples/s  "
            f"{per_process:.0f}/process (goal >= 1500/process)  load {_load()}",
            flush=True,
        )
    if args.lerobot:
        lerobot_comparison(args)
    plain = vla_store_plain_shuffle(args, 0)
    print(f"[1 process] vla store, train.order=uniform  {plain:9.0f} samples/s (without storage locality)")


if __name__ == "__main__":
    main()
