#!/usr/bin/env bash
# Two diagnostics of the cpu_tiny study's refusal, run after `pplaw run experiments/configs/cpu_tiny.yaml`
# (from the repository root, with runs/cpu_tiny complete). Each arm uses the study's own final-run
# training arguments and seeds 0-4, so it pairs with the study's random runs seed by seed.
#  1. boundary: what the refused recommendation would have trained (`--allow-boundary`).
#  2. quad: the rival law that predicted left-out groups best; does it find an interior optimum?
set -euo pipefail
S=runs/cpu_tiny
D=runs/cpu_tiny_diagnostics
train() {  # selection, out, seed
  pplaw train --model $S/base/pretrain/hf --data ../shared/data/clinicaltrials_gov/train.jsonl.gz \
    --selection "$1" --out "$2" --seq-len 256 --batch-size 8 --lr 0.001 --warmup 0.05 --seed "$3" \
    --dtype float32 --mesh data=-1,fsdp=1,tensor=1 --eval-every 0 --text-field text --id-field id \
    --eval-data $S/data/domain_test_cut20000.jsonl --general-eval-data $S/data/general_test_cut20000.jsonl \
    --eval-max-docs 120
}
for k in 0 1 2 3 4; do
  pplaw select --landscape $S/landscape --tokens 80000 --out $D/boundary/select/seed$k --seed $k --method dos \
    --fit $S/fit --target posterior --selector tilted --allow-boundary
  train $D/boundary/select/seed$k/selection.parquet $D/boundary/final/seed$k $k
done
pplaw fit --runs $S/grid/runs.csv --out $D/fit_quad --law quad --moments logppl --trust-margin 0.1 \
  --method point --bootstrap 200 --no-compare --seed 0
for k in 0 1 2 3 4; do
  if pplaw select --landscape $S/landscape --tokens 80000 --out $D/quad/select/seed$k --seed $k --method dos \
      --fit $D/fit_quad --target point --selector tilted; then
    train $D/quad/select/seed$k/selection.parquet $D/quad/final/seed$k $k
  else
    echo "quad: selection refused (seed $k)"; break
  fi
done
# 3. quad, post hoc: its point optimum (mu 6.132, sigma 0.148 in logppl) is interior but 24% of the
#    bootstrap refits put theirs on the edge (threshold 20%), so step 2 refused. Relaxing the
#    threshold after seeing that is a post-hoc choice, reported as such: would the rival law's
#    optimum have beaten random?
for k in 0 1 2 3 4; do
  pplaw select --landscape $S/landscape --tokens 80000 --out $D/quad_relaxed/select/seed$k --seed $k --method dos \
    --fit $D/fit_quad --target point --selector tilted --max-boundary-fraction 0.3
  train $D/quad_relaxed/select/seed$k/selection.parquet $D/quad_relaxed/final/seed$k $k
done
