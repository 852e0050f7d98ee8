"""One entry point to build any environment of any suite from an env config.

A suite is a module exposing three functions:

- ``task_names(selection) -> list[str]``: the tasks a config's ``tasks`` entry selects (a list of
  names, or a suite-specific set name such as ``MT10`` or ``easy``);
- ``make(task, **options) -> gymnasium.Env``: one environment whose observations follow
  ``docs/ARCHITECTURE.md`` (camera images, ``observation.state``, ``instruction``); its keyword
  parameters are the options an env config may set (where it forwards ``**options``, those of the
  env class its return annotation names: :func:`suite_options`, which the config schema reads);
- ``make_expert(env, noise_std=0.0, seed=None) -> Callable[[dict], np.ndarray]``: the scripted expert.

A suite may also simulate many worlds in one process: ``BATCHED_BACKENDS`` names the values of its
``backend`` option that do, and ``make_batched(num_worlds, **options)`` builds them
(:func:`runs_batched`, :func:`make_batched_env`; ``vla eval`` and ``vla record`` use them).

Suites are imported lazily, so using the tabletop suite never imports Meta-World.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np

SUITES: dict[str, str] = {
    "tabletop": "vla.envs.tabletop",
    "metaworld": "vla.envs.metaworld_suite",
}

# Keys of an env config that are not options of the suite's make().
NON_OPTION_KEYS = frozenset({"name", "suite", "tasks", "description"})


def suite_module(suite: str) -> ModuleType:
    """Import and return the module implementing ``suite``."""
    if suite not in SUITES:
        raise ValueError(f"unknown env suite {suite!r}; known suites: {sorted(SUITES)}")
    return importlib.import_module(SUITES[suite])


def task_names(env_cfg: Mapping[str, Any]) -> list[str]:
    """The task names an env config selects."""
    return list(suite_module(env_cfg["suite"]).task_names(env_cfg.get("tasks")))


def all_task_names(suite: str) -> list[str]:
    """Every task of ``suite`` in its own order (``task_names(None)``), which numbers the training
    and evaluation seeds of each task; a suite that cannot list them is an error naming it, never a
    silent renumbering of the seeds."""
    try:
        names = list(suite_module(suite).task_names(None))
    except Exception as exc:  # named and raised: the seeds depend on this list
        raise ValueError(
            f"env suite {suite!r} cannot list all its tasks (task_names(None) failed: {exc}); seeds are "
            "numbered by a task's index in that list"
        ) from exc
    if not names:
        raise ValueError(f"env suite {suite!r} lists no tasks for task_names(None); seeds need them")
    return names


def suite_options(suite: str) -> dict[str, Any]:
    """``{option: annotation}``: the keyword options an env config of ``suite`` may set.

    They are the keyword parameters of the suite's ``make`` after the task and, when ``make`` passes
    ``**options`` on to the env class its return annotation names, that class's constructor
    parameters after the task. Derived, so an option added to a constructor is accepted everywhere.
    """
    make = suite_module(suite).make
    options = _keyword_parameters(make)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(make).parameters.values()):
        try:
            env_class = typing.get_type_hints(make).get("return")
        except (NameError, TypeError):  # an unresolvable annotation: only make's own parameters
            env_class = None
        if inspect.isclass(env_class):
            options = {**_keyword_parameters(env_class), **options}
    return options


def _keyword_parameters(function: Callable[..., Any]) -> dict[str, Any]:
    """``{name: annotation}`` of the keyword parameters after the first (the task); Any if unknown."""
    try:
        signature = inspect.signature(function, eval_str=True)
    except (NameError, TypeError, SyntaxError):  # annotations naming what is not importable here
        signature = inspect.signature(function)
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        p.name: _resolved(p.annotation) for p in list(signature.parameters.values())[1:] if p.kind in keyword
    }


def _resolved(annotation: Any) -> Any:
    """An annotation as a type: Any when there is none or it stayed a string (not resolvable here)."""
    return Any if annotation is inspect.Parameter.empty or isinstance(annotation, str) else annotation


def env_options(env_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword options an env config passes to its suite's ``make``."""
    return {k: _plain(v) for k, v in env_cfg.items() if k not in NON_OPTION_KEYS}


def make_env(env_cfg: Mapping[str, Any], task: str, **overrides: Any) -> gym.Env:
    """Build the environment for ``task`` with the options of ``env_cfg`` (``overrides`` win)."""
    options = env_options(env_cfg) | overrides
    return suite_module(env_cfg["suite"]).make(task, **options)


def runs_batched(env_cfg: Mapping[str, Any]) -> bool:
    """Whether ``env_cfg``'s backend simulates many worlds in one process (its suite's BATCHED_BACKENDS)."""
    batched = getattr(suite_module(env_cfg["suite"]), "BATCHED_BACKENDS", ())
    return env_cfg.get("backend") in batched


def make_batched_env(env_cfg: Mapping[str, Any], num_worlds: int, **overrides: Any) -> Any:
    """``num_worlds`` worlds of ``env_cfg``'s batched backend, any of its tasks in any world."""
    if not runs_batched(env_cfg):
        raise ValueError(f"env config {env_cfg.get('name')!r} does not pick a batched backend")
    options = env_options(env_cfg) | overrides
    return suite_module(env_cfg["suite"]).make_batched(num_worlds, **options)


def make_expert(
    env_cfg: Mapping[str, Any], env: gym.Env, noise_std: float = 0.0, seed: int | None = None
) -> Callable[[dict[str, Any]], np.ndarray]:
    """The scripted expert of ``env`` (built by :func:`make_env` from ``env_cfg``)."""
    return suite_module(env_cfg["suite"]).make_expert(env, noise_std=noise_std, seed=seed)


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python, so suites never see DictConfig/ListConfig."""
    try:
        from omegaconf import OmegaConf

        if OmegaConf.is_config(value):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra-core, a core dependency
        pass
    return value
