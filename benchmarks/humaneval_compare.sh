#!/usr/bin/env bash
# The swarm against one plain call of the same model on HumanEval: 40 problems drawn with seed
# 2026 (the same 40 on any machine), modes plain, single, dynamic, broadcast and random, on the
# embedded server (the default model, or --model NAME) unless a server is given. Prints the per-mode table: pass@1 with its 95%
# interval, the oracle (some agent's code passed) and lost answers (the oracle passed, the final
# answer did not), tokens, server work, requests and seconds per problem, and the cost ratios
# against plain and of dynamic against broadcast.
#
# Resumable: stop it at any time (Ctrl-C, SIGTERM); the same command continues, skipping the
# runs already graded (their records are in $OUT/records.jsonl).
#
#   benchmarks/humaneval_compare.sh                  # 40 problems, embedded default model
#   benchmarks/humaneval_compare.sh --model smollm2-135m   # another embedded model
#   benchmarks/humaneval_compare.sh --per-problem    # and a row per run
#   benchmarks/humaneval_compare.sh --json           # the summary as JSON
#
# All 164 problems on a bigger machine (a GPU server with the production model):
#
#   ALL=1 OUT=runs/humaneval-compare-qwen3 benchmarks/humaneval_compare.sh \
#       --backend-url http://GPU-HOST:8008 --embed-url http://GPU-HOST:8009
set -euo pipefail
cd "$(dirname "$0")/.."

DYTOPO=${DYTOPO:-.venv/bin/dytopo}
MODES=${MODES:-plain,single,dynamic,broadcast,random}
if [[ "${ALL:-0}" == 1 ]]; then
    choose=(--limit 164)
    OUT=${OUT:-runs/humaneval-compare-all}
else
    choose=(--sample 40 --seed 2026)
    OUT=${OUT:-runs/humaneval-compare-s40}
fi

set -x
exec "$DYTOPO" eval humaneval "${choose[@]}" --modes "$MODES" --out "$OUT" "$@"
