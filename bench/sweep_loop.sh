#!/bin/sh
# What a user would write instead of `echo-keras sweep`: for every grid point, `train`, then
# `evaluate` and `evaluate --reset-each-window`, two points at a time (xargs -P 2).
#
# Usage: bench/sweep_loop.sh OUT [TRAIN FLAGS...] < POINTS
#   POINTS: one point a line, "ECHO_STEP WINDOW STATE_SIZE CELL SEED".
#   ECHO_KERAS: the command to run (default: echo-keras on the PATH).
set -eu
OUT=$1
shift
ECHO_KERAS=${ECHO_KERAS:-echo-keras}
TRAIN_FLAGS="$*"
export OUT ECHO_KERAS TRAIN_FLAGS
mkdir -p "$OUT"
xargs -P 2 -L 1 sh -c '
  run="$OUT/echo$0-window$1-state$2-$3-seed$4"
  "$ECHO_KERAS" train --run-dir "$run" --echo-step "$0" --window "$1" --state-size "$2" \
    --cell "$3" --seed "$4" $TRAIN_FLAGS --overwrite --quiet >/dev/null &&
  "$ECHO_KERAS" evaluate --run-dir "$run" --json >"$run.carried.json" &&
  "$ECHO_KERAS" evaluate --run-dir "$run" --reset-each-window --json >"$run.reset.json"
'
