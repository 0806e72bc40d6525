#!/usr/bin/env bash
# Diagnostic of the control_junk study's refusal (lack of fit), decided before any DOS run was
# evaluated: what would DOS have trained had the lack-of-fit gate been overridden, and would it
# have beaten random? Run after `pplaw run experiments/configs/control_junk.yaml` from the
# repository root (STUDY=runs/control_junk by default). Each arm uses the study's final-run
# training arguments, budget and seeds 0-4, so it pairs with the study's own random, oracle and
# band runs seed by seed (all on the clean test split).
#  1. override: `--allow-lack-of-fit`, the fitted law (the best on held-out groups) and its posterior
#     target, with the interior check kept.
#  2. override_boundary: only if 1 refuses for "no interior optimum": also `--allow-boundary`.
set -euo pipefail
S=${STUDY:-runs/control_junk}
D=${DIAG:-runs/control_junk_diagnostics}
train() {  # selection, out, seed
  pplaw train --model $S/base/pretrain/hf --data $S/data/domain_train_junk30.jsonl \
    --selection "$1" --out "$2" --seed "$3" --text-field text --id-field id \
    --eval-data $S/data/domain_test_cut20000.jsonl --general-eval-data $S/data/general_test_cut20000.jsonl \
    --eval-max-docs 120 --seq-len 256 --batch-size 8 --lr 0.001 --min-lr-ratio 0.1 --warmup 0.05 \
    --schedule cosine --weight-decay 0.1 --clip-norm 1 --dtype float32 --mesh data=-1,fsdp=1,tensor=1 \
    --eval-every 0
}
arm() {  # name, extra select flags...
  local name=$1; shift
  for k in 0 1 2 3 4; do
    if ! pplaw select --landscape $S/landscape --tokens 40000 --out $D/$name/select/seed$k --seed $k --method dos \
        --fit $S/fit --target posterior --selector tilted "$@"; then
      echo "$name: selection refused (seed $k)"; return 1
    fi
    train $D/$name/select/seed$k/selection.parquet $D/$name/final/seed$k $k
  done
}
arm override --allow-lack-of-fit || arm override_boundary --allow-lack-of-fit --allow-boundary
