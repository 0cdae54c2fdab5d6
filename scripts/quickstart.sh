#!/usr/bin/env bash
# The quickstart: set up the environment, then pretrain -> linear probe -> segmentation on
# the embedded synthetic_ecg set (built on first use, no download), and print the final
# metrics and where the plots are. About 5 minutes on two CPU cores from a fresh clone, setup included.
#
#   bash scripts/quickstart.sh [WORKDIR]        (default: workdir)
#
# Extra flags for all three programs can be given in QUICKSTART_FLAGS, e.g.
# QUICKSTART_FLAGS="--config.data_dir=/tmp/tfds".
set -euo pipefail
cd "$(dirname "$0")/.."
workdir="${1:-workdir}"
flags=(${QUICKSTART_FLAGS:-})
bash scripts/setup.sh
py="${BEATSSL_VENV:-.venv}/bin/python"
start=$(date +%s)

echo "== 1/3 pretraining (configs/pretrain.py) -> $workdir/pretrain"
"$py" -m beatssl_jax.main --config=configs/pretrain.py --workdir="$workdir/pretrain" "${flags[@]}"
echo "== 2/3 linear probe (configs/linear_probe.py) -> $workdir/linear_probe"
"$py" -m beatssl_jax.main --config=configs/linear_probe.py --workdir="$workdir/linear_probe" \
  --config.pretrained="$workdir/pretrain" "${flags[@]}"
echo "== 3/3 segmentation (configs/segment.py) -> $workdir/segment"
"$py" -m beatssl_jax.main --config=configs/segment.py --workdir="$workdir/segment" \
  --config.pretrained="$workdir/pretrain" "${flags[@]}"

"$py" -m beatssl_jax.summary "$workdir/linear_probe" "$workdir/segment"
echo "quickstart finished in $(( $(date +%s) - start )) s"
