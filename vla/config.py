"""Compose a subcommand's configuration with Hydra's compose API over the config groups ``envs/``,
``datasets/`` and ``policies/``.

Every ``vla`` subcommand reads its ``key=value`` arguments the same way::

    cfg = compose_command("train", argv, TrainCommand)

``TrainCommand`` is the dataclass schema of the command's top-level keys (a structured config, see
:mod:`vla.config_schema`); its ``config_group`` fields select one YAML file of a group:
``env=NAME`` -> ``envs/NAME.yaml``, ``dataset=NAME`` -> ``datasets/NAME.yaml``, ``policy=NAME`` ->
``policies/NAME.yaml`` (under :func:`config_root`). The files are registered in Hydra's ConfigStore
under the group name the user types (the folders keep their plural names: a ``datasets`` package
would shadow Hugging Face's), with every key their schema knows, so that:

- a dataset recipe's ``env:`` is its default env (``env=NAME`` on the command line still wins);
- a policy file's ``train:`` section is the run's top-level ``train`` (``train.steps=200``);
- a policy file may build on another with Hydra's defaults list (``defaults: [tiny128]``, then only
  the keys that differ), as ``policies/tiny128_deep.yaml`` does;
- ``hydra.compose`` then applies the arguments with Hydra's override grammar: ``key=value`` sets a
  known key, even one the file leaves out (``env.layout=slots``); ``+key=value`` adds a key to an
  open mapping (``+env.cameras.top=topview`` on Meta-World); ``~key`` removes a key so that its
  default applies (``~env.layout``); values are typed by the grammar (``[a,b]`` is a list, ``null``
  is None); quote values with spaces or special characters (``instruction='touch the red block'``).

The composed config is checked against the schemas (:func:`vla.config_schema.check`). An unknown key,
a misspelt group option, a value of the wrong type or out of range raises :class:`ConfigError` with
ONE line naming the key (or value) and the valid choices; :func:`vla.cli_errors.cli_main` prints it
as ``vla <command>: <message>`` and exits with status 2.

What comes back is a plain DictConfig in struct mode (reading a key it lacks is an error; ``get``
is not): the command's keys with their defaults; one section per selected group holding only the
keys its file or the command line set (the code that reads a section applies its own defaults);
unselected groups absent.

A new subcommand (e.g. ``vla benchmark suite=tabletop ...``) declares a dataclass for its keys and
calls ``compose_command("benchmark", argv, BenchmarkCommand)``. :func:`split_multirun` and
:func:`sweep` turn ``--multirun a=1,2 b=x,y`` into one argument list per job, the cartesian product
in order as Hydra's basic sweeper makes it (``vla train --multirun`` runs them one after another).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from vla.cli_errors import ConfigError
from vla.config_schema import GROUP_SCHEMAS, check, group_fields, placeholders

__all__ = [
    "GROUPS",
    "ConfigError",
    "available",
    "compose_command",
    "config_root",
    "load_group",
    "run_subcommand",
    "split_multirun",
    "sweep",
]

# The key a user types on the command line -> the config group folder it selects from, in the order
# the groups compose (env first: a dataset recipe sets the env default).
GROUPS: dict[str, str] = {"env": "envs", "dataset": "datasets", "policy": "policies", "suite": "benchmarks"}
# Where a group's file lands in the composed config: its own key, except the policy, whose file also
# holds the run's top-level ``train`` section.
_PACKAGES: dict[str, str] = {"env": "env", "dataset": "dataset", "policy": "_global_", "suite": "suite"}
MULTIRUN_FLAGS = ("--multirun", "-m")


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
    """The YAML file ``<group folder>/<name>.yaml`` as written, or a ConfigError listing the choices."""
    if group not in GROUPS:
        raise ConfigError(f"unknown config group {group!r}; choose one of {', '.join(GROUPS)}")
    path = config_root() / GROUPS[group] / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"no {group} config named {name!r} in {path.parent}; choose one of: {_choices(group)}"
        )
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as exc:  # multi-line by nature: its first line names the problem
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"{path} must hold a mapping at its top level")
    return cfg


def compose_command(
    command: str, argv: Sequence[str], schema: type, *, positional: Sequence[str] = ()
) -> DictConfig:
    """The checked configuration of ``vla <command> <argv>`` (see the module docstring).

    ``positional`` names schema keys that may also come as leading bare arguments, in order
    (``vla data info <store>``). Raises :class:`ConfigError` with one line naming the problem.
    """
    values, overrides = _split_positional(list(argv), positional)
    groups = group_fields(schema)
    composed = _compose(command, schema, groups, overrides)
    composed.update(values)
    checked = _check(composed, schema, groups)
    cfg = OmegaConf.create(checked)
    OmegaConf.set_struct(cfg, True)
    return cfg


# A subcommand's entry in a table of them: (its schema, the key its positional argument sets, what it runs).
Subcommand = tuple[type, str, Callable[[DictConfig], int]]


def run_subcommand(command: str, argv: Sequence[str], table: Mapping[str, Subcommand], usage: str) -> int:
    """Run ``vla <command> <name> <positional> [key=value ...]`` as ``table[name]`` says (``vla data``,
    ``vla convert``); its arguments are composed by :func:`compose_command`. No arguments or
    ``help`` print ``usage``."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage)
        return 0
    if argv[0] not in table:
        raise ConfigError(f"unknown subcommand {argv[0]!r}; choose one of {', '.join(table)}")
    schema, positional, run = table[argv[0]]
    return run(compose_command(f"{command} {argv[0]}", argv[1:], schema, positional=(positional,)))


def split_multirun(argv: Sequence[str]) -> tuple[bool, list[str]]:
    """``(whether --multirun/-m was given, the other arguments)``."""
    return any(a in MULTIRUN_FLAGS for a in argv), [a for a in argv if a not in MULTIRUN_FLAGS]


def sweep(argv: Sequence[str]) -> list[list[str]]:
    """One argument list per job of a sweep (``a=1,2 b=x,y``: 4 jobs), as Hydra's basic sweeper
    expands it; arguments without a sweep give one job."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    try:
        overrides = OverridesParser.create().parse_overrides(list(argv))
        return [list(job) for job in BasicSweeper.split_arguments(overrides, None)[0]]
    except (HydraException, OmegaConfBaseException) as exc:
        raise _explain(exc) from None


# -- composition ----------------------------------------------------------------------------------


def _split_positional(argv: list[str], names: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    values: dict[str, str] = {}
    overrides = []
    for arg in argv:
        if arg.startswith("--"):
            raise ConfigError(f"{arg!r}: options are key=value, e.g. {arg[2:].replace('-', '_')}=<value>")
        if "=" in arg or arg[:1] in ("+", "~"):
            overrides.append(arg)
        elif len(values) < len(names) and not overrides:
            values[names[len(values)]] = arg
        else:
            raise ConfigError(f"argument {arg!r} is not of the form key=value")
    return values, overrides


def _compose(command: str, schema: type, groups: Mapping[str, str | None], overrides: list[str]) -> dict:
    """Hydra's composition of the command's config, its group files and ``overrides``, as plain data."""
    store = ConfigStore.instance()
    primary = f"vla_{command.replace(' ', '_')}"
    try:
        for group in groups:
            for name in available(group):
                node = _option_node(group, name, groups)
                store.store(name=name, group=group, node=node, package=_PACKAGES[group])
        node = OmegaConf.to_container(OmegaConf.structured(schema))
        assert isinstance(node, dict)
        node["defaults"] = ["_self_", *({g: groups[g]} for g in GROUPS if g in groups)]
        store.store(name=primary, node=node)
        with initialize(version_base="1.3", config_path=None, job_name=primary):
            cfg = compose(config_name=primary, overrides=overrides)
        plain = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        raise _explain(exc) from None
    finally:  # the ConfigStore is process-wide: leave nothing of this command in it
        for group in groups:
            store.repo.pop(group, None)
        store.repo.pop(f"{primary}.yaml", None)
    assert isinstance(plain, dict)
    return plain


def _option_node(group: str, name: str, groups: Mapping[str, str | None]) -> dict[str, Any]:
    """One group file as registered: every key of its schema (unset unless the file sets it)."""
    raw = OmegaConf.to_container(load_group(group, name))
    assert isinstance(raw, dict)
    defaults = raw.pop("defaults", None) if group == "policy" else None
    raw.setdefault("name", name)
    try:
        section = _deep_merge(placeholders(GROUP_SCHEMAS[group](raw)), raw)
    except ConfigError:  # e.g. an unknown suite: reported by _check if this file is selected
        section = raw
    if group == "policy":
        train = section.pop("train", None)
        node = {"policy": section, **({"train": train} if train is not None else {})}
        # A policy file may build on another (``defaults: [tiny128]``, Hydra's defaults list: names
        # relative to this group); the keys it leaves out stay MISSING, which never overrides them.
        return {"defaults": [*defaults, "_self_"], **node} if defaults else node
    if group == "dataset" and "env" in groups and isinstance(raw.get("env"), str):
        return {"defaults": [{"override /env@_global_.env": raw["env"]}, "_self_"], **section}
    return section


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        both = isinstance(merged.get(key), dict) and isinstance(value, Mapping)
        merged[key] = _deep_merge(merged[key], value) if both else value
    return merged


def _check(composed: dict[str, Any], schema: type, groups: Mapping[str, str | None]) -> dict[str, Any]:
    """Check each selected group section against its schema and the rest against ``schema``."""
    sections = {}
    for group in groups:
        section = composed.pop(group, None)
        if section is None:
            continue
        name = section.get("name", "?")
        where = f" (in {config_root() / GROUPS[group] / f'{name}.yaml'} or the command line)"
        try:
            sections[group] = check(section, GROUP_SCHEMAS[group](section), f"{group}.")
        except ConfigError as exc:
            raise ConfigError(f"{exc}{where}") from None
    checked = check(composed, schema)
    return {**{k: v for k, v in checked.items() if k not in groups}, **sections}


# -- Hydra's errors, in one line ------------------------------------------------------------------


def _explain(exc: Exception) -> ConfigError:
    """A one-line ConfigError for an error Hydra or OmegaConf raised while composing."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, OverrideParseException):
        return ConfigError(
            f"cannot read argument {exc.override!r}: arguments are key=value, +key=value or ~key "
            "(quote a value with spaces or special characters: key='...')"
        )
    # "find": a group option the command line names; "load": one a file's defaults list names.
    missing = re.search(r"Could not (?:find|load) '([^'/]+)/([^']+)'", text)
    if isinstance(exc, MissingConfigException) and missing and missing.group(1) in GROUPS:
        group, name = missing.groups()
        folder = config_root() / GROUPS[group]
        return ConfigError(f"no {group} config named {name!r} in {folder}; choose one of: {_choices(group)}")
    cause = exc.__cause__
    if isinstance(cause, ConfigAttributeError | ConfigKeyError) and first.startswith("Could not override"):
        key, parent = str(cause.full_key), cause.parent_node
        # Hydra's own node is in the config while it composes; it is no key of ours.
        keys = sorted(str(k) for k in parent if k != "hydra") if isinstance(parent, DictConfig) else []
        head = key.partition(".")[0]
        if not keys and head in GROUPS:  # e.g. env.image_size=96 without env=NAME
            return ConfigError(
                f"cannot set {key!r}: no {head} config is selected; give {head}=NAME ({_choices(head)})"
            )
        return ConfigError(f"unknown key {key!r}; valid keys: {', '.join(keys) or '(none)'}")
    if isinstance(cause, OmegaConfBaseException):
        return ConfigError(f"{cause.full_key or first}: {str(cause.msg).splitlines()[0]}")
    if first.startswith("Ambiguous value"):
        return ConfigError(f"{first}: sweeping over values needs --multirun; a list is written key=[a,b]")
    if first.startswith("Could not append to config"):
        return ConfigError(f"{first} {' '.join(text.splitlines()[1:2])}")
    return ConfigError(first)


def _choices(group: str) -> str:
    return ", ".join(available(group)) or f"(none: {config_root() / GROUPS[group]} holds no .yaml file)"
