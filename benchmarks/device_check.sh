#!/usr/bin/env bash
# One prepared accelerator check, one command: scoring and training throughput, MFU, compile
# times and peak memory on one GPU or TPU chip (SmolLM2-135M, Qwen2.5-0.5B and -1.5B shapes),
# written as JSON; see benchmarks/device_check.py for what is measured.
#
#   benchmarks/device_check.sh [OUT_DIR] [device_check.py options: --small --models --shapes ...]
#
# OUT_DIR: default $OUT if set, else ./device_check_out; results in OUT_DIR/device_check.json
# (rewritten after every measurement) and OUT_DIR/device_check.md.
# Python: $PYTHON when set (used as it is: not probed, nothing installed). Otherwise the first of
# .venv/bin/python and python3 that imports the project's modules and whose JAX runs on this
# machine's accelerator (nvidia-smi: gpu; /dev/accel0 or /dev/vfio/0: tpu; else, or with
# JAX_PLATFORMS=cpu, cpu). Failing that, .venv is created (if missing) and the project installed
# into it from PyPI with the jax extra for the accelerator: cuda13 or cuda12 after the CUDA version
# the driver reports, tpu on a TPU VM (DEVICE_CHECK_JAX_EXTRA overrides).
# Time: the whole command, set-up included, keeps to DEVICE_CHECK_BUDGET_S seconds (default 450):
# the measurements get what the set-up left less a margin, and a hard `timeout` stops Python
# 30 s after that (it still writes the JSON it has on SIGTERM).
set -euo pipefail
started=$SECONDS
cd "$(dirname "$0")/.."
out="${OUT:-./device_check_out}"
if [[ $# -gt 0 && "$1" != -* ]]; then out="$1"; shift; fi
budget="${DEVICE_CHECK_BUDGET_S:-450}"
mkdir -p "$out"
exec > >(tee -a "$out/device_check_setup.log") 2>&1
say() { echo "device_check.sh: $*"; }

if [[ "${JAX_PLATFORMS:-}" == cpu ]]; then
  want=cpu
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  want=gpu
elif [[ -e /dev/accel0 || -e /dev/vfio/0 ]]; then
  want=tpu
else
  want=cpu
fi

# The JAX backend interpreter $1 finds, with the modules device_check.py uses importable ("" if not).
probe() {
  PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" XLA_PYTHON_CLIENT_PREALLOCATE=false "$1" -c '
import jax, pplaw_jax.models, pplaw_jax.distributed, pplaw_jax.landscape.score, pplaw_jax.train.loop, pplaw_jax.train.optim
print(jax.default_backend())' | tail -n 1 || true
}

if [[ -n "${PYTHON:-}" ]]; then
  py="$PYTHON"  # as it is: the JSON's env says which platform its JAX ran on
else
  py=""
  for candidate in .venv/bin/python python3; do
    if command -v "$candidate" >/dev/null 2>&1 && [[ "$(probe "$candidate")" == "$want" ]]; then
      py="$candidate"
      break
    fi
  done
  if [[ -z "$py" ]]; then
    extra=""
    case "$want" in
      gpu)
        cuda=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\).*/\1/p')  # sed reads it all: no SIGPIPE
        cuda="${cuda%%$'\n'*}"
        if [[ "${cuda:-0}" -ge 13 ]]; then extra=cuda13; else extra=cuda12; fi ;;
      tpu) extra=tpu ;;
    esac
    extra="${DEVICE_CHECK_JAX_EXTRA:-$extra}"
    say "no interpreter with JAX on $want here: installing into .venv (jax extra: ${extra:-none})"
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    .venv/bin/pip install -q --retries 2 --timeout 20 -e . ${extra:+"jax[$extra]"}
    py=.venv/bin/python
    found=$(probe "$py")
    [[ "$found" == "$want" ]] || { say "after installing, JAX finds backend '${found:-none}', not $want"; exit 1; }
  fi
fi
say "python: $py ($(command -v "$py")), accelerator here: $want, set-up took $((SECONDS - started)) s"

left=$((budget - (SECONDS - started) - 45))
((left > 30)) || { say "set-up left no time of the ${budget} s budget"; exit 1; }
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
timeout --signal=TERM --kill-after=10 $((left + 30)) \
  "$py" benchmarks/device_check.py --out "$out" --budget-s "$left" "$@"
