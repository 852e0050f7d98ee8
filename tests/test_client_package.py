"""The robot-side client as its own distribution (``client/``, ``vla-client``), proven torch-free.

The client is built into a fresh virtual environment with its declared dependencies only (numpy,
msgpack, websockets, resolved against requirements.lock) and talks to a real ``vla serve`` on a tiny
untrained checkpoint. The environment is built once per test session.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import serve_process, untrained_observation

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "client"

# Runs in the client's environment: everything the robot computer does, printed as one JSON line.
ROUND_TRIP = """
import importlib.util, json, sys
import numpy as np
import vla_client
from vla_client import PolicyClient, RemoteInference

url = sys.argv[1]
observation = {
    "observation.images.front": np.load(sys.argv[2]),
    "observation.state": np.load(sys.argv[3]),
    "instruction": sys.argv[4],
}
report = {
    "torch": importlib.util.find_spec("torch") is not None,
    "vla": importlib.util.find_spec("vla") is not None,
    "client_file": vla_client.__file__,
}
with PolicyClient(url, timeout_s=30) as client:
    report["spec"] = client.health()["spec"]
    actions, timing = client.infer(observation)
    report["actions"] = actions.tolist()
    report["infer_ms"] = timing["infer_ms"]
remote = RemoteInference(url, timeout_s=30)  # the control loop's requester, prefetching in the background
try:
    assert remote.submit(observation, "first")
    result = remote.poll(timeout=30)
    report["remote"] = {"tag": result.tag, "error": result.error, "actions": result.chunk.tolist()}
finally:
    remote.close()
print(json.dumps(report))
"""


@pytest.fixture(scope="session")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a fresh virtual environment holding only the client and its dependencies."""
    root = tmp_path_factory.mktemp("client_env")
    # pip builds a source tree in place (build/, *.egg-info): build a copy, never the repository.
    source = shutil.copytree(CLIENT, root / "client", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=180)
    python = root / "venv" / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    result = subprocess.run(
        [*install, "--constraint", str(ROOT / "requirements.lock"), str(source)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        # Skip only when no index is reachable at all; any other failure is the client's to fix.
        probe = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "-d",
                str(root / "probe"),
                "msgpack",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if probe.returncode != 0:
            pytest.skip(
                f"pip cannot reach a package index to install the client's dependencies: {probe.stderr[-500:]}"
            )
        pytest.fail(f"pip install client/ failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return python


def test_the_client_distribution_declares_only_numpy_msgpack_and_websockets(client_python: Path) -> None:
    listed = subprocess.run(
        [str(client_python), "-m", "pip", "list", "--format=json", "--exclude-editable"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    installed = {package["name"].lower() for package in json.loads(listed.stdout)}
    assert {"vla-client", "numpy", "msgpack", "websockets"} <= installed
    assert not installed & {"torch", "mujoco", "gymnasium", "vla", "zarr", "hydra-core"}, installed


def test_the_torch_free_client_round_trips_with_vla_serve(
    client_python: Path, untrained_checkpoint: Path, tmp_path: Path
) -> None:
    observation = untrained_observation()
    image, state = tmp_path / "image.npy", tmp_path / "state.npy"
    np.save(image, observation["observation.images.front"])
    np.save(state, observation["observation.state"])
    with serve_process(untrained_checkpoint) as server:
        url = server.url()
        # cwd outside the repository: nothing of the clone can be imported by accident.
        result = subprocess.run(
            [str(client_python), "-c", ROUND_TRIP, url, str(image), str(state), observation["instruction"]],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert not report["torch"] and not report["vla"], "the client environment must hold neither torch nor vla"
    assert Path(report["client_file"]).is_relative_to(client_python.parents[1])
    assert report["spec"]["chunk_size"] == 4 and report["spec"]["action_dim"] == 3
    actions = np.asarray(report["actions"], dtype=np.float32)
    assert actions.shape == (4, 3) and np.isfinite(actions).all() and report["infer_ms"] > 0
    assert report["remote"]["tag"] == "first" and report["remote"]["error"] is None
    np.testing.assert_array_equal(np.asarray(report["remote"]["actions"], dtype=np.float32), actions)
    # The wire carried the very chunk the policy computes in-process (same checkpoint, greedy decoding).
    from vla.policies import load_policy

    expected = load_policy(untrained_checkpoint, device="cpu").predict_chunk(observation)
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6)
