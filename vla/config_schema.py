"""Structured-config schemas: the dataclasses a composed config is checked against.

A schema names the keys a config section may hold and their types. Each subcommand declares its
own top-level keys as a dataclass next to its ``main`` (e.g. :class:`vla.train.cli.TrainCommand`),
with plain defaults and, where a value has limits, fields made by :func:`choice`, :func:`at_least`,
:func:`above` or :func:`required`. A field made by :func:`config_group` selects a file of a config
group (``env=NAME``, ``dataset=NAME``, ``policy=NAME``).

The sections of the config groups are *derived* from the code that reads them, so an option added
there is accepted here without an edit:

- ``env``: the keyword options of the suite's ``make`` (:func:`vla.envs.registry.suite_options`,
  the env class's constructor) plus ``name``, ``suite``, ``description`` and ``tasks``;
- ``dataset``: the recording options of :class:`vla.envs.record.RecordOptions` plus ``name``,
  ``description`` and ``env`` (the env config the recipe records in);
- ``policy``: ``model`` from :class:`vla.model.model.VLAConfig`, ``action_tokenizer`` (a name or a
  mapping of options, checked by the training code that reads it), ``replan_every`` (how many
  actions of each chunk run before the next, saved in the checkpoint's spec), ``name`` and
  ``description``.
  A policy file's ``train:`` section is the run's top-level ``train``
  (:class:`vla.train.config.TrainConfig`, see :mod:`vla.config`).

Derived fields start *unset* (OmegaConf's ``MISSING``): :func:`check` leaves unset keys out, so a
composed section holds only what a file or the command line set and the reading code applies its
own defaults (one place for each default). Fields of ``VLAConfig`` that the data decides (cameras,
image size, dimensions, vocabulary sizes) are therefore optional in YAML like every other field.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from collections.abc import Callable, Collection, Mapping
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from vla.cli_errors import ConfigError

# Metadata keys of schema fields (read by check()); ANNOTATION: a type OmegaConf cannot check
# (a union such as ``int | Sequence[int]``), checked by check() itself.
GROUP, CHOICES, GE, GT, REQUIRED, ANNOTATION = "config_group", "choices", "ge", "gt", "required", "annotation"

_SCALARS = (int, float, str, bool, Path)


# -- fields of hand-written schemas ---------------------------------------------------------------


def config_group(default: str | None = None) -> Any:
    """A field selecting one file of the config group named like the field (``env``, ``dataset``,
    ``policy``); ``default`` is the file used when the command line names none."""
    return dataclasses.field(default=None, metadata={GROUP: default})


def choice(default: Any, choices: Collection[Any]) -> Any:
    """A field whose value must be one of ``choices`` (read when checked: a registry may grow)."""
    return dataclasses.field(default=default, metadata={CHOICES: choices})


def at_least(default: Any, minimum: float) -> Any:
    """A number field that must be ``>= minimum`` (None passes: it means "not set")."""
    return dataclasses.field(default=default, metadata={GE: minimum})


def above(default: Any, bound: float) -> Any:
    """A number field that must be ``> bound`` (None passes: it means "not set")."""
    return dataclasses.field(default=default, metadata={GT: bound})


def required(placeholder: str) -> Any:
    """A field the command line must set; the error shows ``<key>=<placeholder>``."""
    return dataclasses.field(default=MISSING, metadata={REQUIRED: placeholder})


def group_fields(schema: type) -> dict[str, str | None]:
    """``{group: default choice}`` for the :func:`config_group` fields of ``schema``."""
    return {f.name: f.metadata[GROUP] for f in dataclasses.fields(schema) if GROUP in f.metadata}


# -- derived schemas ------------------------------------------------------------------------------


def unset_schema(source: type | Mapping[str, Any], name: str | None = None) -> type:
    """A schema with one unset field per field of dataclass ``source`` (its metadata kept), or per
    entry of a ``{name: annotation}`` mapping; types follow the annotations."""
    if isinstance(source, Mapping):
        specs = {key: (annotation, {}) for key, annotation in source.items()}
    else:
        hints = _type_hints(source)
        specs = {f.name: (hints.get(f.name, Any), f.metadata) for f in dataclasses.fields(source)}
    fields = []
    for field_name, (annotation, metadata) in specs.items():
        field_type, choices = _schema_type(annotation)
        if choices is not None:
            metadata = {**metadata, CHOICES: choices}
        if field_type is Any and annotation is not Any:
            metadata = {**metadata, ANNOTATION: annotation}
        fields.append((field_name, field_type, dataclasses.field(default=MISSING, metadata=metadata)))
    return dataclasses.make_dataclass(name or f"{getattr(source, '__name__', 'options')}_schema", fields)


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # a forward reference that does not resolve: those fields take Any
        return {}


def _schema_type(annotation: Any) -> tuple[Any, tuple[Any, ...] | None]:
    """An OmegaConf-checkable type for ``annotation`` (Any where OmegaConf has none, e.g. unions),
    and the allowed values of a ``Literal``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in _SCALARS or (isinstance(annotation, type) and issubclass(annotation, Enum)):
        return annotation, None
    if origin is Literal:
        kinds = {type(a) for a in args}
        return (kinds.pop() if len(kinds) == 1 and kinds <= set(_SCALARS) else Any), args
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            inner, choices = _schema_type(rest[0])
            return (Any if inner is Any else inner | None), choices
        return Any, None
    if origin is list and len(args) == 1 and args[0] in _SCALARS:
        return list[args[0]], None
    if origin is tuple and args and all(a in _SCALARS or a is Ellipsis for a in args):
        return annotation, None
    if origin is dict and len(args) == 2 and args[0] is str:
        return dict[str, args[1] if args[1] in _SCALARS else Any], None
    return Any, None


# -- group schemas --------------------------------------------------------------------------------

# Keys every env config may hold besides the suite's options (vla.envs.registry.NON_OPTION_KEYS).
_ENV_KEY_TYPES: dict[str, Any] = {"name": str, "suite": str, "description": str, "tasks": Any}


def env_schema(section: Mapping[str, Any]) -> type:
    """The schema of an env section: its suite's options (derived) and the common keys."""
    from vla.envs import registry

    suite = section.get("suite")
    if suite not in registry.SUITES:
        raise ConfigError(f"env.suite={suite!r}: choose one of {', '.join(sorted(registry.SUITES))}")
    keys = {key: _ENV_KEY_TYPES.get(key, Any) for key in sorted(registry.NON_OPTION_KEYS)}
    return unset_schema({**keys, **registry.suite_options(str(suite))}, f"{suite}_env")


def dataset_schema(section: Mapping[str, Any]) -> type:
    """The schema of a dataset recipe: the recording options plus name, description and env."""
    from vla.envs.record import RecordOverrides

    base = [(k, str, dataclasses.field(default=MISSING)) for k in ("name", "description", "env")]
    return dataclasses.make_dataclass("dataset", base, bases=(RecordOverrides,))


def policy_schema(section: Mapping[str, Any]) -> type:
    """The schema of a policy section; ``model`` is derived from ``VLAConfig``."""
    from vla.model.model import VLAConfig

    model = unset_schema(VLAConfig, "model")
    fields = [
        ("name", str, dataclasses.field(default=MISSING)),
        ("description", str, dataclasses.field(default=MISSING)),
        ("action_tokenizer", Any, dataclasses.field(default=MISSING)),  # a name or a mapping of options
        # Actions executed from each chunk before the next is predicted (vla.policy_spec.PolicySpec).
        ("replan_every", int, dataclasses.field(default=MISSING, metadata={GE: 1})),
        ("model", model, dataclasses.field(default_factory=model)),
    ]
    return dataclasses.make_dataclass("policy", fields)


def suite_schema(section: Mapping[str, Any]) -> type:
    """The schema of a benchmark suite (``benchmarks/``): :class:`vla.benchmark.BenchmarkRecipe`."""
    from vla.benchmark import BenchmarkRecipe

    return BenchmarkRecipe


# config group -> schema of its section (given the section: an env's schema depends on its suite).
GROUP_SCHEMAS: dict[str, Callable[[Mapping[str, Any]], type]] = {
    "env": env_schema,
    "dataset": dataset_schema,
    "policy": policy_schema,
    "suite": suite_schema,
}


def placeholders(schema: type) -> dict[str, Any]:
    """Every key of ``schema`` set to MISSING (nested schemas recursively): a composed section then
    has every known key, so ``key=value`` can set one a file left out, and ``~key`` unsets it."""
    nested = _nested_schemas(schema)
    return {
        f.name: placeholders(nested[f.name]) if f.name in nested else MISSING
        for f in dataclasses.fields(schema)
    }


def _nested_schemas(schema: type) -> dict[str, type]:
    """``{field: schema}`` of the fields of ``schema`` that are schemas themselves."""
    hints = _type_hints(schema)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(schema)
        if isinstance(hints.get(f.name), type) and dataclasses.is_dataclass(hints[f.name])
    }


# -- checking -------------------------------------------------------------------------------------


def check(values: Mapping[str, Any], schema: type, path: str = "") -> dict[str, Any]:
    """``values`` checked against ``schema`` and converted to its types; unset keys left out.

    Raises :class:`ConfigError` naming the key (``path`` is its prefix, e.g. ``env.``) and the valid
    keys or values: an unknown key, a value of the wrong type, a value out of its range or choices,
    or a :func:`required` key left unset.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), drop_unset(values))
    except ConfigKeyError as exc:
        parent = exc.full_key.rpartition(".")[0]
        raise ConfigError(
            f"unknown key {path + exc.full_key!r}; valid keys: {', '.join(_keys_at(schema, parent)) or '(none)'}"
        ) from None
    except ValidationError as exc:
        key = exc.full_key or _failing_key(values, schema)
        raise ConfigError(f"{path}{key}: {str(exc.msg).splitlines()[0]}") from None
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or _failing_key(values, schema)
        raise ConfigError(f"{path}{key}: {str(exc).splitlines()[0]}") from None
    plain = OmegaConf.to_container(merged, resolve=True, enum_to_str=True)
    assert isinstance(plain, dict)
    _check_limits(plain, schema, path)
    return drop_unset(plain)


def _failing_key(values: Mapping[str, Any], schema: type) -> str:
    """The first key of ``values`` that does not merge into ``schema`` on its own.

    OmegaConf names no key when a whole value has the wrong container type (a list given for a
    mapping, a mapping for a list), so the keys are merged one at a time to find it."""
    structured = OmegaConf.structured(schema)
    for key, value in drop_unset(values).items():
        try:
            OmegaConf.merge(structured, {key: value})
        except OmegaConfBaseException as exc:
            nested = _nested_schemas(schema).get(str(key))
            inner = _failing_key(value, nested) if nested and isinstance(value, Mapping) else ""
            return f"{key}.{inner}" if inner else getattr(exc, "full_key", "") or str(key)
    return ""


def drop_unset(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without its MISSING (``???``) entries, recursively."""
    return {
        k: drop_unset(v) if isinstance(v, Mapping) else v
        for k, v in values.items()
        if not (isinstance(v, str) and v == MISSING)
    }


def _keys_at(schema: type, dotted: str) -> list[str]:
    for part in filter(None, dotted.split(".")):
        nested = _nested_schemas(schema).get(part)
        if nested is None:
            return []
        schema = nested
    return sorted(f.name for f in dataclasses.fields(schema))


def _check_limits(values: Mapping[str, Any], schema: type, path: str) -> None:
    nested = _nested_schemas(schema)
    for f in dataclasses.fields(schema):
        value, key = values.get(f.name, MISSING), f"{path}{f.name}"
        if f.name in nested and isinstance(value, Mapping):
            _check_limits(value, nested[f.name], f"{key}.")
            continue
        if f.metadata.get(REQUIRED) and (isinstance(value, str) and value == MISSING):
            raise ConfigError(f"{key} is required: give {key}={f.metadata[REQUIRED]}")
        if value is None or (isinstance(value, str) and value == MISSING):
            continue
        if ANNOTATION in f.metadata and not _matches(value, f.metadata[ANNOTATION]):
            raise ConfigError(f"{key}={value!r}: expected {_type_name(f.metadata[ANNOTATION])}")
        if CHOICES in f.metadata and value not in f.metadata[CHOICES]:
            raise ConfigError(f"{key}={value!r}: choose one of {', '.join(map(str, f.metadata[CHOICES]))}")
        if GE in f.metadata and value < f.metadata[GE]:
            raise ConfigError(f"{key}={value!r}: must be >= {f.metadata[GE]}")
        if GT in f.metadata and value <= f.metadata[GT]:
            raise ConfigError(f"{key}={value!r}: must be > {f.metadata[GT]}")


def _matches(value: Any, annotation: Any) -> bool:
    """Whether plain ``value`` fits ``annotation`` (unions, sequences, mappings, scalars); any other
    annotation (a class, a callable) accepts it: the code that reads the value checks it."""
    if annotation is Any:
        return True
    if annotation is type(None):
        return value is None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is Literal:
        return value in args
    if annotation in _SCALARS:
        if annotation is Path:
            return isinstance(value, str)
        if isinstance(value, bool) and annotation is not bool:
            return False
        return isinstance(value, annotation) or (annotation is float and isinstance(value, int))
    container = origin or annotation
    if container in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, list):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(_matches, value, args))
        return all(_matches(item, args[0] if args else Any) for item in value)
    if container in (dict, collections.abc.Mapping):
        inner = args[1] if len(args) == 2 else Any
        return isinstance(value, dict) and all(_matches(item, inner) for item in value.values())
    return True


def _type_name(annotation: Any) -> str:
    return str(annotation).replace("collections.abc.", "").replace("typing.", "")
