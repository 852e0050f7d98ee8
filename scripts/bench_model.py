"""Benchmark the VLA model: training throughput, action-chunk latency, tokens per chunk, per head.

For each policy size (``policies/<name>.yaml``) and action head (``--heads``: ``ar_bins``,
``ar_fast``, ``l1``, ``flow``) it measures, side by side in one run:

- training samples/s (forward + backward + AdamW step on random inputs of the demo's shapes), with
  ``--compile`` also through ``torch.compile`` (``train.compile``), as a ratio to eager; with
  ``--layout`` the conv stem's channels-last layout (the default) against NCHW, eager and compiled;
  with ``--text-baseline L`` instructions padded to ``--text-len`` positions (what training pads
  to: the store's longest instruction, vla.inputs.text_positions) against ``L`` (max_text_len);
- inference latency of one action chunk at batch 1 (p50, p99) with the KV cache and without it
  (the uncached reference re-runs the full sequence per token, or per flow step), and their ratio:
  for ``ar_bins`` the number of tokens the binning tokenizer needs, for ``ar_fast`` the mean number
  FAST needs, one pass for ``l1``, the policy's ``flow_steps`` Euler steps for ``flow``;
- action tokens per chunk, binning vs FAST, on synthetic smooth chunks or on a trajectory store;
- with ``--precision``, the cached latency at each inference precision (``fp32``, ``bf16``, ``int8``:
  bf16 prefix + int8 weight-only decode steps, see vla.model.inference_weights), as a ratio to fp32.

    .venv/bin/python scripts/bench_model.py                      # tiny and small on the CPU
    .venv/bin/python scripts/bench_model.py --models tiny --threads 1
    .venv/bin/python scripts/bench_model.py --device cuda --models tiny small base
    .venv/bin/python scripts/bench_model.py --store data/tabletop_demo.zarr
    .venv/bin/python scripts/bench_model.py --models small --precision fp32 bf16 int8 --threads 2
    .venv/bin/python scripts/bench_model.py --models tiny small --heads ar_bins ar_fast l1 flow
    .venv/bin/python scripts/bench_model.py --models tiny128 tiny128_deep --image-size 128 --compile --train-steps 20
    .venv/bin/python scripts/bench_model.py --models tiny128_deep --image-size 128 --batch-size 16 --compile --layout --skip-latency
    .venv/bin/python scripts/bench_model.py --models tiny128_deep --image-size 128 --batch-size 16 --compile --skip-latency --text-len 8 --text-baseline 16
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's vla, whatever is installed
from vla.machine import describe_machine
from vla.model.action_tokenizers import BinningTokenizer, FastTokenizer
from vla.model.model import VLA, VLAConfig
from vla.train.cli import train_config


def machine(device: torch.device) -> str:
    text = describe_machine()
    if device.type == "cuda":
        text += f", running on GPU {torch.cuda.get_device_name(device)}"
    return text


def smooth_chunks(n: int, horizon: int, dims: int, seed: int = 0) -> np.ndarray:
    """Low-frequency random trajectories in [-1, 1] standing in for normalized robot actions."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, horizon)[None, :, None]
    offset = rng.uniform(-0.7, 0.7, (n, 1, dims))
    amplitude = rng.uniform(0.0, 0.3, (n, 1, dims))
    frequency = rng.uniform(0.2, 1.0, (n, 1, dims))
    return (
        offset + amplitude * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 6.3, (n, 1, dims)))
    ).astype(np.float32)


def store_chunks(path: str, horizon: int, limit: int = 4096) -> np.ndarray:
    """Action windows from a trajectory store, scaled so q01..q99 maps to [-1, 1]."""
    from vla.data.store import TrajectoryStore
    from vla.features import ACTION_KEY

    store = TrajectoryStore.open(path, mode="r")
    windows = []
    for e in range(store.num_episodes):
        actions = np.asarray(store.read_episode(e, [ACTION_KEY])[ACTION_KEY], dtype=np.float32)
        windows += [actions[s : s + horizon] for s in range(0, len(actions) - horizon + 1)]
        if len(windows) >= limit:
            break
    chunks = np.stack(windows[:limit])
    q01, q99 = np.quantile(chunks.reshape(-1, chunks.shape[-1]), [0.01, 0.99], axis=0)
    return np.clip(2 * (chunks - q01) / np.maximum(q99 - q01, 1e-6) - 1, -1, 1)


def policy_model(name: str) -> dict:
    """The ``model`` section of ``policies/<name>.yaml`` as ``vla train policy=<name>`` composes it
    (a file may build on another through its defaults list)."""
    return OmegaConf.to_container(train_config([f"policy={name}"]).policy.model)


def make_config(name: str, args: argparse.Namespace, vocab: int, max_tokens: int, head: str) -> VLAConfig:
    section = policy_model(name)
    section["action_head"] = head
    if args.flow_steps is not None:  # the flow head's latency knob: Euler steps per chunk
        section["flow_steps"] = args.flow_steps
    return VLAConfig(**section, image_size=args.image_size, state_dim=args.state_dim, action_dim=args.action_dim,
                     text_vocab_size=300, action_vocab_size=vocab, max_action_tokens=max_tokens)  # fmt: skip


def random_obs(
    config: VLAConfig, batch: int, device: torch.device, text_len: int = 12
) -> dict[str, torch.Tensor]:
    T, N, S = config.n_obs_steps, len(config.cameras), config.image_size
    text_len = min(text_len, config.max_text_len)
    return {
        "images": torch.rand(batch, T, N, 3, S, S, device=device),
        "state": torch.randn(batch, T, config.state_dim, device=device),
        "obs_is_pad": torch.zeros(batch, T, dtype=torch.bool, device=device),
        "text_tokens": torch.randint(3, config.text_vocab_size, (batch, text_len), device=device),
        "text_is_pad": torch.zeros(batch, text_len, dtype=torch.bool, device=device),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_targets(config: VLAConfig, batch: int, tokens: int, device) -> torch.Tensor:
    """Training targets of the head's kind: a chunk in [-1, 1] (continuous) or ``tokens`` token ids."""
    if config.continuous_actions:
        return torch.rand(batch, config.horizon, config.action_dim, device=device) * 2 - 1
    return torch.randint(0, config.action_vocab_size - 1, (batch, tokens), device=device)


def timed_step(loss_fn, optimizer, obs: dict[str, torch.Tensor], targets: torch.Tensor, device) -> float:
    """Seconds of one training step: forward, backward and the optimizer's update."""
    sync(device)
    start = time.perf_counter()
    loss = loss_fn(obs, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    sync(device)
    return time.perf_counter() - start


def train_throughput(
    model: VLA, config: VLAConfig, tokens: int, args, device, compile: bool = False
) -> float:
    """Training samples/s; with ``compile`` through ``torch.compile(model.loss)`` (``train.compile``),
    its compilation inside the two warm-up steps. Instructions take ``--text-len`` positions."""
    model.train()
    loss_fn = torch.compile(model.loss) if compile else model.loss
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    obs = random_obs(config, args.batch_size, device, args.text_len)
    targets = random_targets(config, args.batch_size, tokens, device)
    # The first two steps warm up allocators and kernels (and compile).
    times = [timed_step(loss_fn, optimizer, obs, targets, device) for _ in range(args.train_steps + 2)]
    return args.batch_size * args.train_steps / sum(times[2:])


def latency_ms(
    model: VLA, config: VLAConfig, tokens: int, use_cache: bool, repeats: int, device, precision: str = "fp32"
) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU milliseconds per chunk (CPU time stays meaningful on a busy host)."""
    model.eval()
    obs = random_obs(config, 1, device)
    wall, cpu = [], []
    warmup = 3 if use_cache else 1  # the uncached reference is slow; one warm-up run is enough
    for i in range(repeats + warmup):
        sync(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        model.generate(obs, {"num_tokens": tokens}, use_cache=use_cache, precision=precision)
        sync(device)
        if i >= warmup:
            wall.append((time.perf_counter() - start) * 1e3)
            cpu.append((time.process_time() - start_cpu) * 1e3)
    return wall, cpu


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny", "small"])
    parser.add_argument("--heads", nargs="+", default=None, help="action heads (default: each policy's own)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--store", default=None, help="trajectory store to count action tokens on")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--state-dim", type=int, default=10)
    parser.add_argument("--action-dim", type=int, default=4, help="the tabletop demo's ee_delta actions: 4")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30, help="chunks timed per configuration (cached)")
    parser.add_argument("--uncached-repeats", type=int, default=5, help="0 skips the uncached reference")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time compiled training against eager")
    parser.add_argument(
        "--layout", action="store_true", help="also time training with the conv stem in NCHW (the baseline)"
    )
    parser.add_argument("--skip-latency", action="store_true", help="time training only")
    parser.add_argument(
        "--flow-steps", type=int, default=None, help="Euler steps per chunk (default: the policy's)"
    )
    parser.add_argument("--text-len", type=int, default=12, help="text positions per instruction")
    parser.add_argument(
        "--text-baseline", type=int, default=0, help="also time training with this many text positions"
    )
    parser.add_argument(
        "--precision", nargs="+", default=["fp32"], help="inference precisions to time (fp32 bf16 int8)"
    )
    args = parser.parse_args()
    if args.text_len < 1:
        parser.error(f"--text-len must be >= 1, got {args.text_len}")
    if args.flow_steps is not None and args.flow_steps < 1:
        parser.error(f"--flow-steps must be >= 1, got {args.flow_steps}")
    if args.text_baseline < 0 or args.text_baseline == args.text_len:
        parser.error(
            f"--text-baseline must be 0 (off) or a length other than --text-len, got {args.text_baseline}"
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"machine: {machine(device)}")

    for name in args.models:
        horizon = int(policy_model(name)["horizon"])
        chunks = (
            store_chunks(args.store, horizon) if args.store else smooth_chunks(4096, horizon, args.action_dim)
        )
        source = args.store or "synthetic smooth chunks"
        binning = BinningTokenizer().fit(chunks)
        fast = FastTokenizer().fit(chunks)
        fast_lengths = fast.encode(chunks)[1].sum(1).float()
        fast_mean = round(float(fast_lengths.mean()))
        print(f"\n[{name}] action tokens per chunk (H={horizon}, A={chunks.shape[-1]}, {source}): binning "
              f"{binning.max_tokens}, FAST mean {fast_lengths.mean():.1f} max {int(fast_lengths.max())} "
              f"(EOS included; {binning.max_tokens / float(fast_lengths.mean()):.1f}x fewer)")  # fmt: skip
        vocab = max(binning.vocab_size, fast.vocab_size)
        own_head = policy_model(name).get("action_head", "ar_bins")
        for head in args.heads or [own_head]:
            config = make_config(name, args, vocab, max(binning.max_tokens, fast.max_tokens), head)
            model = VLA(config).to(device)
            tag = f"[{name} {head}]"
            print(
                f"{tag} {model.num_parameters() / 1e6:.2f}M parameters, {config.n_layer} layers x {config.n_embd}"
            )
            tokens = {"ar_bins": binning.max_tokens, "ar_fast": fast_mean}.get(head, config.horizon)
            what = {"ar_bins": f"{tokens} binning tokens", "ar_fast": f"{tokens} FAST tokens",
                    "l1": "one parallel pass", "flow": f"{config.flow_steps} flow steps"}[head]  # fmt: skip
            if not args.skip_training:
                samples = train_throughput(model, config, tokens, args, device)
                print(f"{tag} training (batch {args.batch_size}): {samples:.1f} samples/s")
                measured = {"eager": samples}
                if args.compile:
                    compiled = train_throughput(
                        copy.deepcopy(model), config, tokens, args, device, compile=True
                    )
                    print(f"{tag} training compiled (train.compile=true): {compiled:.1f} samples/s, "
                          f"{compiled / samples:.2f}x eager")  # fmt: skip
                    measured["compiled"] = compiled
                if args.layout:
                    time_layouts(model, config, tokens, tag, args, device, measured)
                if args.text_baseline:
                    time_text_positions(model, config, tokens, tag, args, device)
            if not args.skip_latency:
                time_head(model, config, tokens, what, tag, args, device)


def time_layouts(
    model: VLA, config: VLAConfig, tokens: int, tag: str, args, device, channels_last: dict
) -> None:
    """Training samples/s with the conv stem in NCHW (the baseline), against ``channels_last``'s
    (samples/s per mode: eager, compiled)."""
    for mode, fast in channels_last.items():
        nchw = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
        slow = train_throughput(nchw, config, tokens, args, device, compile=mode == "compiled")
        print(f"{tag} training {mode}, conv stem channels-last {fast:.1f} samples/s, NCHW {slow:.1f} "
              f"samples/s: {fast / slow:.2f}x")  # fmt: skip


def time_text_positions(model: VLA, config: VLAConfig, tokens: int, tag: str, args, device) -> None:
    """Training samples/s with instructions padded to ``--text-len`` positions against
    ``--text-baseline`` (max_text_len, the baseline), eager and compiled. The two run in alternating
    blocks of 10 steps and each reports its median step: on a shared VM whose speed drifts by the
    minute, two runs one after the other differ by more than the 5-10% measured here."""
    # random_obs caps a length at the policy's max_text_len: compare and label the lengths it uses.
    tested, baseline = (min(n, config.max_text_len) for n in (args.text_len, args.text_baseline))
    if tested == baseline:
        print(f"{tag}: --text-len {args.text_len} and --text-baseline {args.text_baseline} both cap at "
              f"max_text_len={config.max_text_len}; no text-positions comparison")  # fmt: skip
        return
    for compile in (False, True):
        variants = {}
        for length in (tested, baseline):
            copy_ = copy.deepcopy(model).train()
            loss_fn = torch.compile(copy_.loss) if compile else copy_.loss
            optimizer = torch.optim.AdamW(copy_.parameters(), lr=1e-4)
            obs = random_obs(config, args.batch_size, device, length)
            targets = random_targets(config, args.batch_size, tokens, device)
            variants[length] = (loss_fn, optimizer, obs, targets, [])
        for block in range(2 + max(1, args.train_steps // 10)):  # two blocks warm up (and compile)
            for loss_fn, optimizer, obs, targets, times in variants.values():
                block_times = [timed_step(loss_fn, optimizer, obs, targets, device) for _ in range(10)]
                if block >= 2:
                    times.extend(block_times)
        fast, slow = (args.batch_size / statistics.median(variants[n][4]) for n in (tested, baseline))
        mode = "compiled" if compile else "eager"
        print(f"{tag} training {mode}, {tested} text positions {fast:.1f} samples/s, "
              f"{baseline} positions {slow:.1f} samples/s: {fast / slow:.2f}x "
              f"(median step, alternating blocks)")  # fmt: skip


def time_head(model: VLA, config: VLAConfig, tokens: int, what: str, tag: str, args, device) -> None:
    """Cached (and uncached) chunk latency at every precision asked for."""
    cached, cached_cpu = latency_ms(model, config, tokens, True, args.repeats, device)
    line = (f"{tag} chunk latency, batch 1, {what}: KV cache p50 {percentile(cached, 50):.2f} ms "
            f"p99 {percentile(cached, 99):.2f} ms (CPU time p50 {percentile(cached_cpu, 50):.2f} ms)")  # fmt: skip
    if args.uncached_repeats > 0:
        uncached, uncached_cpu = latency_ms(model, config, tokens, False, args.uncached_repeats, device)
        ratio = statistics.median(uncached) / statistics.median(cached)
        line += (f" | no cache p50 {percentile(uncached, 50):.2f} ms p99 {percentile(uncached, 99):.2f} ms "
                 f"(CPU time p50 {percentile(uncached_cpu, 50):.2f} ms) | cache speed-up {ratio:.1f}x")  # fmt: skip
    print(line)
    fp32_p50 = percentile(cached, 50)
    for precision in (p for p in args.precision if p != "fp32"):
        low, low_cpu = latency_ms(model, config, tokens, True, args.repeats, device, precision)
        print(f"{tag} chunk latency, batch 1, {what}, {precision}: KV cache p50 "
              f"{percentile(low, 50):.2f} ms p99 {percentile(low, 99):.2f} ms (CPU time p50 "
              f"{percentile(low_cpu, 50):.2f} ms) | {fp32_p50 / percentile(low, 50):.1f}x fp32")  # fmt: skip


if __name__ == "__main__":
    main()
