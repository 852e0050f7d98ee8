"""The ``vla`` command: one entry point, each subcommand implemented in the module that owns it.

Subcommands are imported lazily (each by a small function that imports its module) so ``vla data
info`` does not pay for importing torch. Every one takes ``key=value`` arguments composed by
:func:`vla.config.compose_command` (Hydra's compose API over ``envs/``, ``datasets/``, ``policies/``)
and reports bad input in one line on stderr with a non-zero exit status (its ``main`` is wrapped by
:func:`vla.cli_errors.cli_main`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import ModuleType


def _data() -> ModuleType:
    from vla.data import cli

    return cli


def _record() -> ModuleType:
    from vla.envs import record

    return record


def _train() -> ModuleType:
    from vla.train import cli

    return cli


def _eval() -> ModuleType:
    from vla.evaluation import cli

    return cli


def _demo() -> ModuleType:
    from vla import demo

    return demo


def _benchmark() -> ModuleType:
    from vla import benchmark

    return benchmark


def _serve() -> ModuleType:
    from vla.deploy import server

    return server


def _deploy() -> ModuleType:
    from vla.deploy import cli

    return cli


def _export() -> ModuleType:
    from vla.policies import export

    return export


def _convert() -> ModuleType:
    from vla.interop import cli

    return cli


# subcommand -> (its module, imported on use; one-line help). Each module's ``main`` takes the remaining argv.
COMMANDS: dict[str, tuple[Callable[[], ModuleType], str]] = {
    "data": (_data, "inspect, validate and compute statistics of a trajectory store"),
    "record": (_record, "record scripted-expert demonstrations into a store"),
    "train": (_train, "train a policy: dataset=<name> policy=<name> [key=value ...] (--multirun)"),
    "eval": (_eval, "evaluate a checkpoint in simulation"),
    "demo": (_demo, "record, train and evaluate the tiny VLA end to end"),
    "benchmark": (_benchmark, "record, train and evaluate a benchmark suite; write its results table"),
    "serve": (_serve, "serve a checkpoint over WebSocket (msgpack)"),
    "deploy": (_deploy, "run a policy in a fixed-rate robot control loop"),
    "export": (_export, "export a checkpoint as a TorchScript / torch.export program"),
    "convert": (_convert, "convert between LeRobot datasets and trajectory stores"),
}


def _usage() -> str:
    lines = ["usage: vla <command> [args ...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``vla <command> ...`` to the module that implements it."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(
            f"vla: unknown command {command!r}; choose one of {', '.join(COMMANDS)} (vla --help)",
            file=sys.stderr,
        )
        return 2
    load, _ = COMMANDS[command]
    module = load()
    if rest[:1] in (["-h"], ["--help"]):  # every command documents itself in its module docstring
        print(module.__doc__ or f"vla {command}: no help available")
        return 0
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
