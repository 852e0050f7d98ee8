"""``vla demo``: the whole stack on the embedded default, end to end, on a CPU.

It is ``vla benchmark suite=demo`` (``benchmarks/demo.yaml``, see :mod:`vla.benchmark`):

1. record scripted-expert demonstrations of the demo tasks (``datasets/tabletop_demo.yaml``: reach a
   block, press a button or pick up a block of the named colour, 9 tasks, random layouts) into a
   Zarr store;
2. train the policy the suite names on them (``policies/``);
3. evaluate it in closed loop on the demo tasks with the published evaluation seeds, under the
   training phrasings and the held-out phrasings;
4. print the results table and the paths of the report, the plot and the videos.

Each step is the same command a user would type (printed as it runs), and each resumes: rerunning
the demo reuses the recorded episodes, the finished training run and a matching evaluation.

    vla demo [out=runs/benchmark/demo] [quick=true] [record.<key>=<value> ...] [train.<key>=<value> ...]
             [eval.<key>=<value> ...]

``quick=true`` is the smoke-test size used by the test suite (a handful of episodes and steps).
"""

from __future__ import annotations

from collections.abc import Sequence

from vla.benchmark import benchmark_main
from vla.cli_errors import cli_main

SUITE = "demo"


@cli_main("demo")
def main(argv: Sequence[str]) -> int:
    """Entry point of ``vla demo``."""
    if argv and argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    return benchmark_main(argv, default_suite=SUITE)
