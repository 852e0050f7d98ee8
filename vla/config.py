"""Compose run configurations from the Hydra config groups ``envs/``, ``datasets/`` and ``policies/``.

Each group is a folder of YAML files at the repository root. A command line such as
``dataset=tabletop_demo policy=tiny train.steps=200`` picks one file per group and then applies
dotted overrides, exactly as Hydra's override grammar reads them (OmegaConf dotlists).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# The key a user types on the command line -> the config group folder it selects from.
GROUPS: dict[str, str] = {"env": "envs", "dataset": "datasets", "policy": "policies"}


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names it."""


def config_root() -> Path:
    """The folder that holds ``envs/``, ``datasets/`` and ``policies/``.

    ``VLA_CONFIG_ROOT`` wins; otherwise the repository this package was installed from (editable
    installs), otherwise the current directory.
    """
    if env_root := os.environ.get("VLA_CONFIG_ROOT"):
        return Path(env_root)
    repo_root = Path(__file__).resolve().parents[1]
    if all((repo_root / folder).is_dir() for folder in GROUPS.values()):
        return repo_root
    return Path.cwd()


def available(group: str) -> list[str]:
    """Names of the configs in ``group`` (``env``, ``dataset`` or ``policy``)."""
    folder = config_root() / GROUPS[group]
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_group(group: str, name: str) -> DictConfig:
    """Load ``<group folder>/<name>.yaml``, or raise a ConfigError listing the choices."""
    if group not in GROUPS:
        raise ConfigError(f"unknown config group {group!r}; choose one of {sorted(GROUPS)}")
    path = config_root() / GROUPS[group] / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no {group} config named {name!r} in {path.parent}; available: {available(group)}")
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path} must hold a mapping at its top level")
    return cfg


def compose(args: Sequence[str], defaults: dict[str, object] | None = None) -> DictConfig:
    """Build one config from ``key=value`` arguments.

    ``env=NAME``, ``dataset=NAME`` and ``policy=NAME`` load a file of that group under the key
    ``env``, ``dataset`` or ``policy``; a dataset file may name its env (``env: NAME``), which is
    then loaded too unless the command line picks one. Every other argument is a dotted override
    applied last. ``defaults`` gives values (group choices included) used when the command line
    does not set them.
    """
    choices: dict[str, str] = {}
    overrides: list[str] = []
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not of the form key=value")
        key, value = arg.split("=", 1)
        if key in GROUPS:
            choices[key] = value
        else:
            overrides.append(arg)
    base = OmegaConf.create({k: v for k, v in (defaults or {}).items() if k not in GROUPS})
    for group in GROUPS:
        if group not in choices and defaults and isinstance(defaults.get(group), str):
            choices[group] = str(defaults[group])
    cfg = base
    if "dataset" in choices:
        dataset_cfg = load_group("dataset", choices["dataset"])
        dataset_cfg.name = dataset_cfg.get("name", choices["dataset"])
        cfg = OmegaConf.merge(cfg, {"dataset": dataset_cfg})
        if "env" not in choices and isinstance(dataset_cfg.get("env"), str):
            choices["env"] = dataset_cfg.env
    for group in ("env", "policy"):
        if group in choices:
            group_cfg = load_group(group, choices[group])
            group_cfg.name = group_cfg.get("name", choices[group])
            cfg = OmegaConf.merge(cfg, {group: group_cfg})
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
    except Exception as exc:  # OmegaConf raises several types for malformed dotlists
        raise ConfigError(f"cannot apply overrides {overrides}: {exc}") from exc
    assert isinstance(cfg, DictConfig)
    return cfg
