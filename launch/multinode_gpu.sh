#!/usr/bin/env bash
# Multi-node GPU without a scheduler: run this on every node with the same command.
#
#   COORDINATOR=10.0.0.1:12355 NUM_NODES=2 NODE_RANK=0 launch/multinode_gpu.sh pplaw score ...   # node 0
#   COORDINATOR=10.0.0.1:12355 NUM_NODES=2 NODE_RANK=1 launch/multinode_gpu.sh pplaw score ...   # node 1
#
# NODE_RANK 0 hosts the coordinator. Each process sees all local GPUs.
set -euo pipefail
: "${COORDINATOR:?set COORDINATOR=host:port of node 0}"
: "${NUM_NODES:?set NUM_NODES}"
: "${NODE_RANK:?set NODE_RANK (0..NUM_NODES-1)}"
cd "$(dirname "$0")/.."
export JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="$NUM_NODES" JAX_PROCESS_ID="$NODE_RANK"
exec .venv/bin/"$@"
