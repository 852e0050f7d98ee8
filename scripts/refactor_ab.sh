#!/usr/bin/env bash
# Same-scene A/B of the refactor commit ed7b885 (one decoder, the Hydra config path, layers without
# loops) against its parent dbaebee, on the parent's demo recipe: slots layout, 64x64 cameras, three
# reach tasks, 250 episodes per task, policy=tiny for 3,000 steps, 50 evaluation seeds per task and
# phrasing set. ed7b885 also changed the demo on purpose (a wider front camera, per-task training
# seeds, a 4-query instruction pool, the demo's env and dataset files); refactor_ab.patch reverts
# those five files in a scratch copy, so that both commits run the same scene and recipe.
#
#   scripts/refactor_ab.sh [out_dir] [arm ...]     arms: parent:<seed> or refactor:<seed>
#   scripts/refactor_ab.sh runs/refactor_ab          # the README's four: parent:0 parent:1 refactor:0 refactor:1
#
# Each tree records its own store (the two are byte-identical), trains one run per arm with that
# training seed and evaluates it; every step resumes. About 7 minutes per arm on a 2-core CPU.
# Figures: out_dir/<arm>/eval/report.md (README, "What the demo does and what it measured").
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=$repo/.venv/bin/python
out=$(mkdir -p "${1:-runs/refactor_ab}" && cd "${1:-runs/refactor_ab}" && pwd)
shift || true
arms=("$@")
[ ${#arms[@]} -gt 0 ] || arms=(parent:0 parent:1 refactor:0 refactor:1)

checkout() {  # name commit [patch]: a scratch clone of this repository at that commit
  [ -d "$out/$1" ] && return
  git clone -q "$repo" "$out/$1" && git -C "$out/$1" checkout -q "$2"
  [ -z "${3:-}" ] || git -C "$out/$1" apply "$3"
}
checkout parent dbaebee
checkout refactor ed7b885 "$repo/scripts/refactor_ab.patch"

for arm in "${arms[@]}"; do
  tree=${arm%%:*} seed=${arm#*:}
  [ -d "$out/$tree" ] || { echo "unknown arm $arm: parent:<seed> or refactor:<seed>" >&2; exit 2; }
  run=$out/$tree-seed$seed
  # Each tree's own code and config files (the venv's editable install points at this repository).
  export PYTHONPATH=$out/$tree VLA_CONFIG_ROOT=$out/$tree MUJOCO_GL=${MUJOCO_GL:-egl}
  "$py" -m vla.cli record dataset=tabletop_demo out="$out/$tree.zarr"
  "$py" -m vla.cli train store="$out/$tree.zarr" policy=tiny out="$run/train" train.seed="$seed"
  "$py" -m vla.cli eval checkpoint="$run/train" env=tabletop_demo episodes_per_task=50 phrasing=both \
    videos=0 out="$run/eval"
done
grep -H "^| all" "$out"/*-seed*/eval/report.md
