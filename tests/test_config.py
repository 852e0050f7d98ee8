"""One config path for every subcommand: Hydra's compose API checked against structured configs.

Composes real configs (the repository's envs/, datasets/, policies/ or a temporary config root)
and checks what the schemas accept, refuse and derive; nothing is trained or simulated here.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra.core.config_store import ConfigStore

from vla.config import GROUPS, ConfigError, compose_command, sweep
from vla.config_schema import at_least, check, choice, config_group, env_schema, placeholders, policy_schema
from vla.envs import registry
from vla.envs.record import RecordCommand
from vla.evaluation.cli import EvalCommand
from vla.train.cli import TrainCommand, train_config
from vla.train.config import TrainConfig


def _refused(command: str, argv: list[str], schema: type) -> str:
    with pytest.raises(ConfigError) as caught:
        compose_command(command, argv, schema)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_keys_are_refused_naming_the_key_and_the_valid_ones() -> None:
    message = _refused("train", ["outt=runs/x"], TrainCommand)
    assert "'outt'" in message and "out, policy" in message
    message = _refused("eval", ["env=tabletop_demo", "env.layuot=slots"], EvalCommand)
    assert "'env.layuot'" in message and "layout" in message
    # + adds a key in Hydra's grammar, but the schema still refuses one it does not know.
    assert "'env.layuot'" in _refused("eval", ["env=tabletop_demo", "+env.layuot=slots"], EvalCommand)
    assert "'train.horizon'" in _refused(
        "train", ["train.horizon=4"], TrainCommand
    )  # the model's, not train's


def test_a_misspelt_group_option_lists_the_choices() -> None:
    message = _refused("record", ["env=tabletop_dmeo"], RecordCommand)
    assert (
        "'tabletop_dmeo'" in message and "metaworld_mt10, metaworld_mt50, tabletop, tabletop_demo" in message
    )
    message = _refused("train", ["policy=tinyy"], TrainCommand)
    assert "'tinyy'" in message and "base, small, tiny" in message


def test_a_wrong_type_or_range_names_the_key() -> None:
    assert _refused("train", ["store=x", "train.steps=abc"], TrainCommand).startswith("train.steps:")
    assert "policy.model.n_layer" in _refused("train", ["policy.model.n_layer=two"], TrainCommand)
    assert "env.max_steps" in _refused("eval", ["env=tabletop", "env.max_steps=soon"], EvalCommand)
    # A union OmegaConf cannot type (the constructor's int | Sequence[int]) is still checked.
    message = _refused("eval", ["env=tabletop", "env.image_size=big"], EvalCommand)
    assert "env.image_size='big': expected int | Sequence[int]" in message
    assert "num_envs=0: must be >= 1" in _refused("eval", ["env=tabletop", "num_envs=0"], EvalCommand)
    assert "choose one of train, heldout, both" in _refused(
        "eval", ["env=tabletop", "phrasing=x"], EvalCommand
    )
    # A whole value of the wrong container type: OmegaConf names no key, the check still does.
    assert _refused("train", ["train.task_weights=[1,2]"], TrainCommand).startswith("train.task_weights:")
    assert _refused("train", ["train.betas={a:1}"], TrainCommand).startswith("train.betas:")


def test_plus_adds_to_open_mappings_and_tilde_unsets() -> None:
    cfg = compose_command("eval", ["env=tabletop_demo", "~env.layout"], EvalCommand)
    assert "layout" not in cfg.env and cfg.env.image_size == 128  # the rest of the file stays
    assert compose_command("eval", ["env=tabletop_demo"], EvalCommand).env.layout == "free"
    cfg = compose_command(
        "eval",
        ["env=metaworld_mt10", "+env.cameras.top=topview", "~env.cameras.wrist", "~env.cameras.side"],
        EvalCommand,
    )
    assert dict(cfg.env.cameras) == {"front": "workspace", "top": "topview"}
    cfg = train_config(["+policy.model.extra.note=hello", "~train.steps"])
    assert cfg.policy.model.extra.note == "hello" and "steps" not in cfg.train  # TrainConfig's default then


def test_keys_a_file_leaves_out_can_be_set_and_values_are_typed() -> None:
    cfg = compose_command("eval", ["env=tabletop", "env.layout=slots", "env.image_size=[32,48]"], EvalCommand)
    assert cfg.env.layout == "slots" and list(cfg.env.image_size) == [32, 48]
    cfg = train_config(["train.lr=1e-3", "policy.model.dropout=0"])
    assert cfg.train.lr == 0.001 and isinstance(cfg.policy.model.dropout, float)


def test_sections_hold_only_what_was_set_and_unselected_groups_are_absent() -> None:
    cfg = compose_command("eval", ["env=metaworld_mt10"], EvalCommand)
    written = yaml.safe_load((Path(__file__).parents[1] / "envs" / "metaworld_mt10.yaml").read_text())
    assert dict(cfg.env) == {**written, "name": "metaworld_mt10"}
    assert cfg.num_envs == 2 and "dataset" not in cfg  # the command's own keys come with defaults
    with pytest.raises(Exception):  # noqa: B017 - struct mode: reading an absent key is an error
        cfg.no_such_key  # noqa: B018


def test_a_dataset_recipe_picks_its_env_and_the_command_line_wins() -> None:
    assert compose_command("record", ["dataset=tabletop_demo"], RecordCommand).env.name == "tabletop_demo"
    cfg = compose_command("record", ["dataset=tabletop_demo", "env=tabletop"], RecordCommand)
    assert cfg.env.name == "tabletop" and cfg.dataset.env == "tabletop_demo"


def test_the_policy_files_train_section_is_the_runs_train() -> None:
    written = yaml.safe_load((Path(__file__).parents[1] / "policies" / "tiny.yaml").read_text())
    cfg = train_config(["policy=tiny"])
    assert dict(cfg.train) == written["train"] and "train" not in cfg.policy
    assert train_config(["policy=tiny", "train.steps=7"]).train.steps == 7
    assert "'policy.train'" in _refused("train", ["policy.train.steps=7"], TrainCommand)


def test_the_derived_schemas_follow_the_code() -> None:
    from vla.envs.tabletop.env import TabletopEnv
    from vla.model.model import VLAConfig

    model_keys = set(placeholders(policy_schema({}))["model"])
    assert model_keys == {f.name for f in dataclasses.fields(VLAConfig)}
    assert set(placeholders(TrainCommand)["train"]) == {f.name for f in dataclasses.fields(TrainConfig)}
    tabletop = set(placeholders(env_schema({"suite": "tabletop"})))
    constructor = set(list(inspect.signature(TabletopEnv).parameters)[1:])  # after the task
    make = inspect.signature(registry.suite_module("tabletop").make).parameters.values()
    own = {p.name for p in list(make)[1:] if p.kind is not inspect.Parameter.VAR_KEYWORD}  # backend, device
    assert own == {"backend", "device"}
    assert tabletop == constructor | own | registry.NON_OPTION_KEYS


def test_a_field_added_to_vlaconfig_is_accepted_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    import vla.model.model as model

    @dataclasses.dataclass
    class Grown(model.VLAConfig):
        brand_new_steps: int = 3

    monkeypatch.setattr(model, "VLAConfig", Grown)
    assert train_config(["policy.model.brand_new_steps=5"]).policy.model.brand_new_steps == 5
    assert "policy.model.brand_new_steps" in _refused(
        "train", ["policy.model.brand_new_steps=x"], TrainCommand
    )


def test_an_option_added_to_an_env_constructor_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class ShinyEnv:
        def __init__(self, task: str, image_size: int = 64, shiny: bool = False) -> None: ...

    def make(task: str, **options: Any) -> ShinyEnv:
        return ShinyEnv(task, **options)

    make.__annotations__["return"] = ShinyEnv  # what `-> ShinyEnv` resolves to in a suite module
    suite = types.ModuleType("shiny_suite")
    suite.make = make  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "shiny_suite", suite)
    monkeypatch.setitem(registry.SUITES, "shiny", "shiny_suite")
    root = _config_root(tmp_path, envs={"sparkle": {"suite": "shiny", "image_size": 32}})
    monkeypatch.setenv("VLA_CONFIG_ROOT", str(root))
    cfg = compose_command("eval", ["env=sparkle", "env.shiny=true"], EvalCommand)
    assert cfg.env.shiny is True and cfg.env.image_size == 32
    assert "'env.shiney'" in _refused("eval", ["env=sparkle", "env.shiney=true"], EvalCommand)


def test_a_policy_file_builds_on_another_through_its_defaults_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = train_config(["policy=tiny128_deep"])
    base = train_config(["policy=tiny128", "policy.model.stem_blocks=1"])
    assert deep.policy.model == base.policy.model and deep.train == base.train
    assert deep.policy.replan_every == 2 and deep.policy.name == "tiny128_deep"
    assert train_config(["policy=tiny128_deep", "policy.model.n_layer=2"]).policy.model.n_layer == 2
    root = _config_root(tmp_path, envs={})
    (root / "policies" / "tiny.yaml").write_text(
        (Path(__file__).parents[1] / "policies" / "tiny.yaml").read_text()
    )
    (root / "policies" / "orphan.yaml").write_text(yaml.safe_dump({"defaults": ["nosuch"]}))
    monkeypatch.setenv("VLA_CONFIG_ROOT", str(root))
    message = _refused("train", ["policy=orphan"], TrainCommand)
    assert "no policy config named 'nosuch'" in message and "orphan" in message and "tiny" in message


def test_a_file_with_an_unknown_key_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _config_root(
        tmp_path, envs={"bad": {"suite": "tabletop", "colour": "red"}, "nosuite": {"tasks": "all"}}
    )
    monkeypatch.setenv("VLA_CONFIG_ROOT", str(root))
    message = _refused("eval", ["env=bad"], EvalCommand)
    assert "'env.colour'" in message and "bad.yaml" in message
    assert "env.suite=None: choose one of metaworld, tabletop" in _refused(
        "eval", ["env=nosuite"], EvalCommand
    )
    assert compose_command("eval", ["policy=scripted"], EvalCommand).policy == "scripted"  # no env: no check


def test_schema_fields_check_their_limits() -> None:
    @dataclasses.dataclass
    class Command:
        count: int = at_least(1, 1)
        mode: str = choice("a", ("a", "b"))
        env: Any = config_group()

    assert check({"count": 3}, Command) == {"count": 3, "mode": "a", "env": None}
    for values, message in [({"count": 0}, "count=0: must be >= 1"), ({"mode": "c"}, "mode='c': choose one of a, b"),
                            ({"cuont": 1}, "unknown key 'cuont'; valid keys: count, env, mode")]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            check(values, Command)


def test_arguments_outside_the_grammar_are_refused_in_one_line() -> None:
    assert "root=<value>" in _refused("train", ["--root", "x"], TrainCommand)
    assert "not of the form key=value" in _refused("train", ["store"], TrainCommand)
    assert "cannot read argument 'store=[x'" in _refused("train", ["store=[x"], TrainCommand)
    assert "--multirun" in _refused("train", ["policy=tiny,small"], TrainCommand)
    assert "no env config is selected" in _refused("eval", ["env.image_size=96"], EvalCommand)


def test_sweep_expands_the_cartesian_product_in_order() -> None:
    jobs = sweep(["policy=tiny,small", "train.lr=1e-3,3e-4", "store=x"])
    assert jobs == [
        ["policy=tiny", "train.lr=0.001", "store=x"],
        ["policy=tiny", "train.lr=0.0003", "store=x"],
        ["policy=small", "train.lr=0.001", "store=x"],
        ["policy=small", "train.lr=0.0003", "store=x"],
    ]
    assert sweep(["store=x"]) == [["store=x"]]


def test_composing_leaves_hydras_config_store_clean() -> None:
    train_config(["policy=tiny"])
    with pytest.raises(ConfigError):
        train_config(["policy=nope"])
    assert not set(GROUPS) & set(ConfigStore.instance().repo)
    assert not [name for name in ConfigStore.instance().repo if str(name).startswith("vla_")]


def _config_root(tmp_path: Path, envs: dict[str, dict]) -> Path:
    root = tmp_path / "configs"
    for folder in GROUPS.values():
        (root / folder).mkdir(parents=True, exist_ok=True)
    for name, content in envs.items():
        (root / "envs" / f"{name}.yaml").write_text(yaml.safe_dump(content))
    return root
