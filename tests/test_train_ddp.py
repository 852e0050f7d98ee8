"""DDP on the CPU: two gloo processes run the real training code path and end with identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from test_train_helpers import make_config_root, make_tiny_store


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, root: str) -> None:
    # What torchrun sets for each process.
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), VLA_CONFIG_ROOT=f"{root}/cfg")  # fmt: skip
    torch.set_num_threads(1)
    from vla.train.cli import train_config
    from vla.train.loop import train

    cfg = train_config(
        ["dataset=tinyds", "policy=testtiny", f"out={root}/run", "train.steps=3", "train.batch_size=2"]
    )
    result = train(cfg)
    weights = {k: v.detach().contiguous() for k, v in result.model.state_dict().items()}
    save_file(weights, f"{root}/rank{rank}.safetensors")


@pytest.mark.timeout(300)
def test_two_gloo_processes_stay_in_sync(tmp_path: Path) -> None:
    make_config_root(tmp_path / "cfg", make_tiny_store(tmp_path / "store.zarr"))
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=name)
    # Only rank 0 wrote, and what it wrote is the synchronized model.
    checkpoints = tmp_path / "run" / "checkpoints"
    saved = load_file(checkpoints / (checkpoints / "latest").read_text().strip() / "model.safetensors")
    for name, value in saved.items():
        torch.testing.assert_close(value, rank0[name], rtol=0, atol=0)
    # The processes saw different samples (sharding), yet their weights moved identically; check they
    # did move (the initial weights are seeded), so the equality above is not trivially true.
    torch.manual_seed(0)
    from vla.checkpoint import load_documents
    from vla.model.model import VLA, VLAConfig

    docs = load_documents(checkpoints / (checkpoints / "latest").read_text().strip())
    fresh = VLA(VLAConfig.from_dict(docs["config"]["model"])).state_dict()
    assert any(not torch.equal(fresh[n], rank0[n]) for n in rank0 if n in fresh)
    assert not list(tmp_path.glob("run/checkpoints/.tmp-*"))
