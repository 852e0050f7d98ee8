"""The ``vla`` command: one entry point, each subcommand implemented in the module that owns it.

Subcommands are imported lazily so ``vla data info`` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from vla.config import ConfigError

# Commands that parse their own -h/--help (argparse); the others take key=value arguments.
ARGPARSE_COMMANDS = {"data", "convert"}

# subcommand -> (module, function, one-line help). Each function takes the remaining argv.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("vla.data.cli", "main", "inspect, validate and compute statistics of a trajectory store"),
    "record": ("vla.envs.record", "main", "record scripted-expert demonstrations into a store"),
    "train": ("vla.train.cli", "main", "train a policy: dataset=<name> policy=<name> [key=value ...]"),
    "eval": ("vla.evaluation.cli", "main", "evaluate a checkpoint in simulation"),
    "demo": ("vla.demo", "main", "record, train and evaluate the tiny VLA end to end"),
    "serve": ("vla.deploy.server", "main", "serve a checkpoint over WebSocket (msgpack)"),
    "deploy": ("vla.deploy.cli", "main", "run a policy in a fixed-rate robot control loop"),
    "export": ("vla.policies.export", "main", "export a checkpoint as a TorchScript / torch.export program"),
    "convert": ("vla.interop.cli", "main", "convert between LeRobot datasets and trajectory stores"),
}


def _usage() -> str:
    lines = ["usage: vla <command> [args ...]", "", "commands:"]
    lines += [f"  {name:<8} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``vla <command> ...`` to the module that implements it."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"vla: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name, _ = COMMANDS[command]
    module = importlib.import_module(module_name)
    if rest[:1] in (["-h"], ["--help"]) and command not in ARGPARSE_COMMANDS:
        # key=value commands document themselves in their module docstring.
        print(module.__doc__ or f"vla {command}: no help available")
        return 0
    try:
        return int(getattr(module, function_name)(rest) or 0)
    except ConfigError as exc:  # a bad key=value argument or config name: say which, no traceback
        print(f"vla {command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
