"""Which code produced a result: the commit of the checkout, +dirty, the version outside one, and
the benchmark's warning when its steps ran on different code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from vla.benchmark import code_warning, results_markdown
from vla.code_version import code_version


def git(root: Path, *args: str) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin:/usr/local/bin"}  # fmt: skip
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True, env=env
    )
    return done.stdout.strip()


def test_a_checkout_reports_its_commit_and_whether_tracked_files_changed(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "model.py").write_text("x = 1\n")
    git(tmp_path, "add", "model.py")
    git(tmp_path, "commit", "-q", "-m", "first")
    head = git(tmp_path, "rev-parse", "--short=12", "HEAD")
    assert code_version(tmp_path) == head and re.fullmatch(r"[0-9a-f]{12}", head)
    (tmp_path / "notes.txt").write_text("untracked files do not change the code\n")
    assert code_version(tmp_path) == head
    (tmp_path / "model.py").write_text("x = 2\n")
    assert code_version(tmp_path) == head + "+dirty"


def test_outside_a_checkout_it_reports_the_package_version(tmp_path):
    # A folder inside some other repository (site-packages in a project's venv) is not a checkout of vla.
    git(tmp_path, "init", "-q")
    inner = tmp_path / "site-packages"
    inner.mkdir()
    assert code_version(inner).startswith("vla ")


def test_the_benchmark_warns_when_its_steps_ran_on_different_or_uncommitted_code():
    assert code_warning({"record": ["abc"], "train": ["abc"], "eval": ["abc"]}) is None
    mixed = code_warning({"record": ["abc"], "train": ["abc", "def"], "eval": ["def"]})
    assert mixed is not None and "different code" in mixed and "train: abc, def" in mixed
    dirty = code_warning({"record": ["abc+dirty"], "train": ["abc+dirty"]})
    assert dirty is not None and "uncommitted" in dirty
    assert code_warning({}) is None  # a state written before the code was recorded


def test_the_results_table_shows_each_steps_code_and_the_warning():
    results = {
        "suite": "s", "machine": "m", "overall": [], "per_task": [], "per_difficulty": [],
        "seconds": {"record": 60.0, "train": 120.0}, "record_and_train_minutes": 3.0,
        "commands": {"record": "vla record x", "train": "vla train y"},
        "code": {"record": ["abc"], "train": ["def"]},
    }  # fmt: skip
    table = results_markdown(results)
    assert "| record | 1.0 min | abc | `vla record x` |" in table
    assert "| train | 2.0 min | def | `vla train y` |" in table
    assert "different code" in table
