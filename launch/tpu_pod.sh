#!/usr/bin/env bash
# Run a pplaw command on every host of a Cloud TPU VM slice.
#
#   launch/tpu_pod.sh create                      # create the slice (once)
#   launch/tpu_pod.sh setup                       # copy this repository and install it on all hosts
#   launch/tpu_pod.sh run pplaw score --model gs://bucket/smollm2 --data 'gs://bucket/med/*.jsonl.gz' \
#       --out gs://bucket/landscape --mesh data=-1,fsdp=1,tensor=1
#   launch/tpu_pod.sh delete
#   launch/tpu_pod.sh --dry-run run pplaw ...     # print the gcloud commands instead of running them
#
# Settings from the environment: TPU_NAME, ZONE, ACCELERATOR_TYPE, RUNTIME_VERSION and PROJECT
# (default: gcloud's configured project). Every host runs the same command, with its arguments
# passed through unchanged (quoted for the remote shell, so a gs:// glob reaches pplaw, which
# expands it). `pplaw` calls jax.distributed.initialize(), which on a TPU VM finds the
# coordinator and the process id from the TPU metadata. Each host reads its own shard of the
# input and writes its own landscape parts, so a preempted slice resumes where it stopped.
set -euo pipefail
usage() { sed -n '2,16p' "$0" >&2; exit 2; }
dry_run=0
if [[ "${1:-}" == "--dry-run" ]]; then dry_run=1; shift; fi
: "${TPU_NAME:=pplaw-v5e-32}"
: "${ZONE:=us-west4-a}"
: "${ACCELERATOR_TYPE:=v5litepod-32}"
: "${RUNTIME_VERSION:=v2-alpha-tpuv5-lite}"
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
ARCHIVE="${TMPDIR:-/tmp}/pplaw_jax-${TPU_NAME}.tgz"

# The words as one shell line: each word bare when it is safe, else in single quotes.
shell_line() {
  local word out=()
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$word")
    else
      out+=("'${word//\'/\'\\\'\'}'")
    fi
  done
  printf '%s\n' "${out[*]}"
}
# Run a command, or with --dry-run print it (one line, quoted so that it can be pasted).
do_cmd() { if ((dry_run)); then shell_line "$@"; else "$@"; fi; }
tpu() { do_cmd gcloud compute tpus tpu-vm "$@" --zone="$ZONE" --project="$PROJECT"; }

case "${1:-}" in create | setup | run | delete) ;; *) usage ;; esac
[[ "$1" != run || $# -gt 1 ]] || { echo "$0 run: give the command to run on every host (e.g. pplaw score ...)" >&2; exit 2; }
PROJECT="${PROJECT:-$(gcloud config get-value project 2>/dev/null || true)}"
[[ -n "$PROJECT" ]] || { echo "$0: set PROJECT (no default project configured in gcloud)" >&2; exit 2; }

case "$1" in
  create)
    tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION" ;;
  setup)
    do_cmd tar -C "$REPO_DIR" --exclude=.venv --exclude=.git -czf "$ARCHIVE" .
    tpu scp "$ARCHIVE" "$TPU_NAME":pplaw_jax.tgz --worker=all
    tpu ssh "$TPU_NAME" --worker=all --command='set -e; mkdir -p ~/pplaw_jax && tar -C ~/pplaw_jax -xzf ~/pplaw_jax.tgz && cd ~/pplaw_jax && python3 -m venv .venv && .venv/bin/pip install -q -e . "jax[tpu]" gcsfs' ;;
  run)
    shift
    tpu ssh "$TPU_NAME" --worker=all --command="cd ~/pplaw_jax && .venv/bin/$(shell_line "$@")" ;;
  delete)
    tpu delete "$TPU_NAME" --quiet ;;
esac
