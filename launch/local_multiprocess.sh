#!/usr/bin/env bash
# Run N JAX processes on this machine as one data-parallel job (CPU by default), e.g.
#
#   bash launch/local_multiprocess.sh 2 --config=configs/pretrain.py:tiny --workdir=workdir/mp
#
# Every process runs `python -m beatssl_jax.main` with the same flags; beatssl_jax.main sees
# JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID and calls
# jax.distributed.initialize. Each process reads its own rows of every global batch and
# writes its own iterator state into the checkpoints; process 0 writes metrics.jsonl.
# Environment: PORT (coordinator port, default 12355), DEVICES_PER_PROCESS (CPU devices
# each process simulates, default 1), PYTHON (default python).
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 NUM_PROCESSES [beatssl_jax.main flags...]" >&2
  exit 2
fi
num_processes=$1
shift
port=${PORT:-12355}
devices=${DEVICES_PER_PROCESS:-1}
python=${PYTHON:-python}
cd "$(dirname "$0")/.."

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup INT TERM

for ((i = 0; i < num_processes; i++)); do
  JAX_PLATFORMS=cpu \
  XLA_FLAGS="--xla_force_host_platform_device_count=${devices}" \
  JAX_COORDINATOR_ADDRESS="localhost:${port}" \
  JAX_NUM_PROCESSES="${num_processes}" \
  JAX_PROCESS_ID="${i}" \
    "$python" -m beatssl_jax.main "$@" &
  pids+=($!)
done

status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"
