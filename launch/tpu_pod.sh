#!/usr/bin/env bash
# Run a pplaw command on every host of a Cloud TPU VM slice.
#
#   launch/tpu_pod.sh create                      # create the slice (once)
#   launch/tpu_pod.sh setup                       # copy this repository and install it on all hosts
#   launch/tpu_pod.sh run pplaw score --model gs://bucket/smollm2 --data gs://bucket/med/*.jsonl.gz \
#       --out gs://bucket/landscape --mesh data=-1,fsdp=1,tensor=1
#   launch/tpu_pod.sh delete
#
# Every host runs the same command; `pplaw` calls jax.distributed.initialize(), which on a TPU VM
# finds the coordinator and the process id from the TPU metadata. Each host reads its own shard of
# the input and writes its own landscape parts, so a preempted slice resumes where it stopped.
set -euo pipefail
: "${TPU_NAME:=pplaw-v5e-32}"
: "${ZONE:=us-west4-a}"
: "${ACCELERATOR_TYPE:=v5litepod-32}"
: "${RUNTIME_VERSION:=v2-alpha-tpuv5-lite}"
: "${PROJECT:=$(gcloud config get-value project 2>/dev/null)}"
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
tpu() { gcloud compute tpus tpu-vm "$@" --zone="$ZONE" --project="$PROJECT"; }

case "${1:-}" in
  create)
    tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" ;;
  setup)
    tar -C "$REPO_DIR" --exclude=.venv --exclude=.git -czf /tmp/pplaw_jax.tgz .
    tpu scp /tmp/pplaw_jax.tgz "$TPU_NAME":~/pplaw_jax.tgz --worker=all
    tpu ssh "$TPU_NAME" --worker=all --command='
      set -e; mkdir -p ~/pplaw_jax && tar -C ~/pplaw_jax -xzf ~/pplaw_jax.tgz
      cd ~/pplaw_jax && python3 -m venv .venv && .venv/bin/pip install -q -e . "jax[tpu]" gcsfs' ;;
  run)
    shift
    cmd=$(printf '%q ' "$@")
    tpu ssh "$TPU_NAME" --worker=all --command="cd ~/pplaw_jax && .venv/bin/$cmd" ;;
  delete)
    tpu delete "$TPU_NAME" --quiet ;;
  *)
    sed -n '2,14p' "$0"; exit 2 ;;
esac
