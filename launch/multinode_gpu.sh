#!/usr/bin/env bash
# Multi-node GPU without a scheduler: run this on every node with the same command.
#
#   COORDINATOR=10.0.0.1:12355 NUM_NODES=2 NODE_RANK=0 launch/multinode_gpu.sh pplaw score ...   # node 0
#   COORDINATOR=10.0.0.1:12355 NUM_NODES=2 NODE_RANK=1 launch/multinode_gpu.sh pplaw score ...   # node 1
#
# NODE_RANK 0 hosts the coordinator. Each process sees all local GPUs. The command is a program of
# the environment PPLAW_VENV (default: this repository's .venv), e.g. `pplaw` or `python -m ...`;
# paths in its arguments are taken from the repository root, so give absolute paths or URLs.
# The three variables set below are what pplaw_jax.distributed.initialize_distributed() reads.
set -euo pipefail
: "${COORDINATOR:?set COORDINATOR=host:port of node 0}"
: "${NUM_NODES:?set NUM_NODES}"
: "${NODE_RANK:?set NODE_RANK (0..NUM_NODES-1)}"
[[ $# -gt 0 ]] || { echo "usage: COORDINATOR=host:port NUM_NODES=N NODE_RANK=i $0 pplaw SUBCOMMAND ..." >&2; exit 2; }
if ! [[ "$NUM_NODES" =~ ^[1-9][0-9]*$ && "$NODE_RANK" =~ ^[0-9]+$ ]] || ((NODE_RANK >= NUM_NODES)); then
  echo "$0: NODE_RANK=$NODE_RANK must be an integer in 0..NUM_NODES-1 (NUM_NODES=$NUM_NODES)" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
venv="${PPLAW_VENV:-$PWD/.venv}"
export JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="$NUM_NODES" JAX_PROCESS_ID="$NODE_RANK"
exec "$venv"/bin/"$@"
