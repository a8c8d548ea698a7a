#!/usr/bin/env bash
# Every benchmark script once, one after another, each under the benchmark lock (so two timing runs never share
# the cores): the "Targets at a glance" run of docs/benchmarks.md. Each script writes its own section.
#   benchmarks/run_all.sh                       # all but the training benchmark
#   benchmarks/run_all.sh "$SPIKEFORGE_DATA"    # also the training speed phase (needs Fashion-MNIST there)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOCK="${SPIKEFORGE_BENCH_LOCK:-/tmp/spikeforge-bench.lock}"

run() {
    echo "== $* ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg))"
    flock "$LOCK" python "$@"
}

run benchmarks/data_bench.py ${1:+--data-dir "$1"}
run benchmarks/neurons.py
run benchmarks/neuron_zoo.py
run benchmarks/models_bench.py
run benchmarks/first_use.py
if [ -n "${1:-}" ]; then
    run benchmarks/train_bench.py --data-dir "$1" --phase speed
    run benchmarks/methods.py --data-dir "$1" --train-subset 4000 --test-subset 1000 --memory-T 4,8,32 --steps 3
fi
