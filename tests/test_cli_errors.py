"""Every `vla` subcommand refuses bad input with ONE line on stderr, a non-zero exit status and no
traceback, and leaves nothing behind (no empty output folder, no writer lock file in a non-store).

In-process through ``vla.cli.main`` (capsys), except two subprocess runs where a traceback could
escape ``main`` (an asyncio server that cannot bind; a DataLoader worker reading a corrupt chunk).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_train_helpers import make_tiny_store

from vla.cli import main as vla_main
from vla.data import TrajectoryStore

LOCK_FILE = ".vla-writer.lock"


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], code: int | None = None) -> str:
    """Run ``vla <argv>``; assert it failed with one line on stderr and no traceback; return the line."""
    status = vla_main(argv)
    err = capsys.readouterr().err
    assert status != 0, f"vla {argv} succeeded"
    assert code is None or status == code, (status, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert re.match(r"vla( [a-z]+)?: ", lines[0]), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained) tiny checkpoint of 32x32 front/wrist cameras: it fits no env config."""
    from vla.deploy.untrained import write_untrained_checkpoint

    root = tmp_path_factory.mktemp("cli_errors_ckpt")
    return write_untrained_checkpoint(
        root, image_size=32, state_dim=8, action_dim=4, overrides=["policy.model.n_layer=1"]
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: nothing listens there


# The acceptance commands of the config path, and one per remaining subcommand (exit status 2).
CONFIG_ERRORS = [
    (["train", "outt=x"], ["'outt'", "valid keys: dataset, device, env, out,"]),
    (["eval", "checkpointt=x"], ["'checkpointt'", "checkpoint, device"]),
    (["serve", "prot=1"], ["'prot'", "port"]),
    (["record", "env=nosuchenv"], ["'nosuchenv'", "tabletop, tabletop_demo"]),
    (
        ["deploy", "checkpoint=x", "robot=sim", "env=tabletop_demo", "task=reach-red", "max_detla=0.01"],
        ["'max_detla'", "max_delta"],
    ),  # fmt: skip
    (["train", "store=x", "train.steps=abc"], ["train.steps", "Integer"]),
    (["demo", "quik=true"], ["'quik'", "quick"]),
    (["export", "checkpoint=x", "out=y", "fromat=torchscript"], ["'fromat'", "format"]),
    (["export", "checkpoint=x", "out=y", "format=onnx"], ["format='onnx'", "torchscript"]),
    (["data", "info", "s.zarr", "verbose=true"], ["'verbose'", "valid keys: store"]),
    (["data", "inspect", "s.zarr"], ["'inspect'", "info, validate, stats, demo"]),
    (["data", "demo", "s.zarr", "episodes=0"], ["episodes=0: must be >= 1"]),
    (["convert", "from-lerobot", "local/x", "--root", "r"], ["'--root'", "root=<value>"]),
    (["convert", "to-lerobot", "s.zarr", "out=o"], ["repo_id is required"]),
    (["nosuch"], ["'nosuch'", "data, record, train"]),
]


@pytest.mark.parametrize(
    ("argv", "needles"), CONFIG_ERRORS, ids=[" ".join(argv) for argv, _ in CONFIG_ERRORS]
)
def test_bad_arguments_are_refused_in_one_line(argv, needles, capsys) -> None:
    line = _fails(capsys, argv, code=2)
    for needle in needles:
        assert needle in line, line


def test_eval_reports_bad_input_in_one_line(checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "eval"
    scripted = ["eval", "policy=scripted", "env=tabletop_demo", f"out={out}", "progress=false"]
    assert "does not exist" in _fails(capsys, ["eval", f"checkpoint={tmp_path / 'nope'}", "env=tabletop_demo",
                                               f"out={out}"], code=1)  # fmt: skip
    assert "episodes_per_task=-3: must be >= 1" in _fails(capsys, [*scripted, "episodes_per_task=-3"], code=2)
    assert "phrasing='xyz': choose one of train, heldout, both" in _fails(capsys, [*scripted, "phrasing=xyz"])
    assert "num_envs=0: must be >= 1" in _fails(capsys, [*scripted, "num_envs=0"], code=2)
    assert "flow_noise='same': choose one of fresh, fixed" in _fails(
        capsys, [*scripted, "flow_noise=same"], code=2
    )
    assert "applies to vla checkpoints" in _fails(capsys, [*scripted, "flow_noise=fixed"], code=1)
    assert "flow_noise_scale=-1.0: must be >= 0" in _fails(capsys, [*scripted, "flow_noise_scale=-1"], code=2)
    assert "flow_noise_scale=0.5 applies to vla checkpoints" in _fails(
        capsys, [*scripted, "flow_noise_scale=0.5"], code=1
    )
    assert "flow_steps=0: must be >= 1" in _fails(capsys, [*scripted, "flow_steps=0"], code=2)
    assert "flow_steps=4 applies to vla checkpoints" in _fails(capsys, [*scripted, "flow_steps=4"], code=1)
    assert not out.exists()  # refused before an output folder was made
    # The checkpoint reads 32x32 cameras, the env renders 64x64.
    argv = ["eval", f"checkpoint={checkpoint}", "env=tabletop_demo", "episodes_per_task=1", "num_envs=1",
            f"out={out}", "progress=false", "videos=0"]  # fmt: skip
    line = _fails(capsys, argv, code=1)
    assert "observation.images.front" in line and "(32, 32, 3)" in line
    assert not out.exists()  # the failed run removed the folder it made


def test_serve_reports_bad_input_in_one_line(
    checkpoint: Path, tmp_path: Path, capsys, busy_port: int
) -> None:
    assert "does not exist" in _fails(capsys, ["serve", f"checkpoint={tmp_path / 'nope'}"], code=1)
    assert _fails(capsys, ["serve", f"checkpoint={checkpoint}", "port=abc"], code=2).startswith(
        "vla serve: port:"
    )
    assert "checkpoint is required" in _fails(capsys, ["serve", "port=0"], code=2)
    assert "flow_steps=0: must be >= 1" in _fails(
        capsys, ["serve", f"checkpoint={checkpoint}", "flow_steps=0"], code=2
    )
    line = _fails(capsys, ["serve", f"checkpoint={checkpoint}", f"port={busy_port}"], code=1)
    assert str(busy_port) in line and "in use" in line


def test_deploy_reports_bad_input_in_one_line(checkpoint: Path, tmp_path: Path, capsys) -> None:
    base = [
        "deploy",
        f"checkpoint={checkpoint}",
        "robot=sim",
        "env=tabletop_demo",
        f"stats={tmp_path / 's.json'}",
    ]
    assert "does not exist" in _fails(capsys, ["deploy", f"checkpoint={tmp_path / 'nope'}", "robot=sim",
                                               "env=tabletop_demo", "status=false"], code=1)  # fmt: skip
    assert "task='reach-purple'" in _fails(capsys, [*base, "task=reach-purple"], code=2)
    assert _fails(capsys, [*base, "hz=abc"], code=2).startswith("vla deploy: hz:")
    assert "max_delta=-1.0: must be > 0" in _fails(capsys, [*base, "max_delta=-1"], code=2)
    assert "robot='moon'" in _fails(capsys, [*base, "robot=moon"], code=2)
    server = f"ws://127.0.0.1:{_free_port()}"
    line = _fails(
        capsys, ["deploy", f"server={server}", "robot=sim", "env=tabletop_demo", "status=false"], code=1
    )
    assert f"cannot reach the policy server at {server}" in line
    line = _fails(
        capsys, ["deploy", f"server={server}", "robot=sim", "env=tabletop_demo", "flow_steps=2"], code=2
    )
    assert "flow_steps is the server's setting" in line
    assert not (tmp_path / "s.json").exists()


def test_train_reports_bad_stores_in_one_line(tmp_path: Path, capsys) -> None:
    train = ["train", "policy=tiny", "train.progress=false", "train.num_workers=0", "device=cpu"]
    line = _fails(capsys, [*train, f"store={tmp_path / 'missing.zarr'}", f"out={tmp_path / 'r1'}"], code=1)
    assert "missing.zarr" in line and "no trajectory store" in line
    (tmp_path / "plain").mkdir()
    assert "no trajectory store" in _fails(
        capsys, [*train, f"store={tmp_path / 'plain'}", f"out={tmp_path / 'r2'}"]
    )
    store = _corrupt(make_tiny_store(tmp_path / "store.zarr"))
    line = _fails(capsys, [*train, f"store={store}", f"out={tmp_path / 'r3'}"], code=1)
    assert "observation.images.wrist" in line and "checksum mismatch" in line


def test_record_reports_bad_output_in_one_line(tmp_path: Path, capsys) -> None:
    record = ["record", "env=tabletop_demo", "episodes=1", "workers=0", "progress=false"]
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "no trajectory store" in _fails(capsys, [*record, f"out={plain}"], code=1)
    assert list(plain.iterdir()) == []  # no writer lock file left in a folder that is no store
    (tmp_path / "file.txt").write_text("x")
    assert "no trajectory store" in _fails(capsys, [*record, f"out={tmp_path / 'file.txt'}"], code=1)
    store = make_tiny_store(tmp_path / "store.zarr")
    with TrajectoryStore.open(store, mode="a"):  # another writer holds it
        assert "open for writing by another writer" in _fails(capsys, [*record, f"out={store}"], code=1)
    assert "workers=-1: must be >= 0" in _fails(
        capsys, [*record, "workers=-1", f"out={tmp_path / 'n.zarr'}"], code=2
    )
    assert not (tmp_path / "n.zarr").exists()


def test_demo_stops_at_a_failing_step_with_its_one_line(tmp_path: Path, capsys) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    line = _fails(capsys, ["demo", "quick=true", f"out={tmp_path / 'demo'}", f"record.out={plain}"], code=1)
    assert line.startswith("vla record: ") and "no trajectory store" in line
    assert not (tmp_path / "demo" / "train").exists()


def test_convert_names_what_a_lerobot_dataset_lacks(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never the Hub, even if a check below were missed
    root = tmp_path / "lerobot"
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text("{}")
    convert = ["convert", "from-lerobot", "local/x", f"root={root}", f"out={tmp_path / 's.zarr'}"]
    line = _fails(capsys, convert, code=1)
    assert "meta/info.json key 'features'" in line and "meta/tasks.parquet" in line
    info = {"codebase_version": "v3.0", "fps": 10, "total_episodes": 1, "data_path": "data/x.parquet",
            "features": {"observation.images.front": {"dtype": "video", "shape": [8, 8, 3]}}}  # fmt: skip
    (root / "meta" / "info.json").write_text(json.dumps(info))
    (root / "meta" / "tasks.parquet").write_bytes(b"")
    line = _fails(capsys, convert, code=1)
    assert "meta/episodes" in line and "videos/observation.images.front" in line and "key" not in line
    assert not (tmp_path / "s.zarr").exists()


def test_data_reports_non_stores_in_one_line_and_leaves_no_lock(tmp_path: Path, capsys) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert "no trajectory store" in _fails(capsys, ["data", "stats", str(plain)], code=1)
    assert list(plain.iterdir()) == []
    assert "no trajectory store" in _fails(capsys, ["data", "info", str(tmp_path / "missing.zarr")], code=1)


def _subprocess(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUJOCO_GL": "egl", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "vla.cli", *argv], capture_output=True, text=True, env=env,
                          timeout=300, check=False)  # fmt: skip


def test_serve_on_a_busy_port_in_a_process(checkpoint: Path, busy_port: int) -> None:
    done = _subprocess(["serve", f"checkpoint={checkpoint}", f"port={busy_port}"])
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "in use" in done.stderr


def _corrupt(store: Path) -> Path:
    """Flip bytes inside the wrist camera's chunk: its checksum no longer matches (StoreCorruptError)."""
    chunk = next((store / "data" / "observation.images.wrist").rglob("c/*/*/*/*"))
    data = bytearray(chunk.read_bytes())
    data[60:200] = bytes(b ^ 0xFF for b in data[60:200])
    chunk.write_bytes(bytes(data))
    return store


def test_train_on_a_corrupt_chunk_with_loader_workers_in_a_process(tmp_path: Path) -> None:
    store = _corrupt(make_tiny_store(tmp_path / "store.zarr"))
    done = _subprocess(["train", f"store={store}", f"out={tmp_path / 'run'}", "policy=tiny", "device=cpu",
                        "policy.model.n_layer=1", "train.steps=2", "train.batch_size=2", "train.num_workers=1",
                        "train.progress=false"])  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    # multiprocessing's resource tracker may warn at exit about the queues of the DataLoader workers
    # torn down by the error (it does so whether or not vla catches the error): not vla's output.
    lines = [line for line in done.stderr.strip().splitlines() if "resource_tracker" not in line]
    assert len(lines) == 1 and "checksum" in lines[0] and "observation.images.wrist" in lines[0], lines
