#!/usr/bin/env bash
# Pretrain on a Cloud TPU VM slice (v4/v5e/v5p pod): the same command on every host.
#
#   TPU_NAME=my-pod ZONE=us-central2-b bash launch/tpu_pod.sh \
#       --config=configs/pretrain.py:ptb_xl,base --workdir=gs://bucket/beatssl/run1 \
#       --config.data_dir=gs://bucket/tfds
#
# On a pod every host runs one process; `--multiprocess` makes beatssl_jax.main call
# jax.distributed.initialize(), which finds the coordinator and the process ids from the
# TPU metadata. The global batch (config.batch_size) is split over all chips; build the
# dataset once beforehand (python -m data_builders.build ... --data_dir=gs://...) so hosts
# do not wait on process 0's build. The repository must be checked out at REPO_DIR on
# every host with the package installed (bash scripts/setup.sh). A preempted slice gets
# SIGTERM: the run saves a checkpoint and exits; rerun this command to resume.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}"
repo_dir=${REPO_DIR:-'~/beatssl-jax'}
flags=$(printf '%q ' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command \
  "cd ${repo_dir} && .venv/bin/python -m beatssl_jax.main --multiprocess ${flags}"
