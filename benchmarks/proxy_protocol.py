"""Proxy-run protocol: do small law-fitting runs behave on the token axis and rank subsets the way
large runs do, under the current schedule and under a constant or reduced learning rate?

On a study's base model and landscape (e.g. cpu_tiny's), four subsets of different perplexity
regimes (`random`, `low`, `high`, `band`; each re-drawn per budget, seed 0) are trained at three
budgets spanning 16x under three schedules:

* ``cosine``: the study's `train` settings (warmup, cosine decay to 0.1 x lr over each run's own
  length) — what every law-fitting run uses today;
* ``constant``: the same peak lr, warmup, then constant (no decay);
* ``cosine-low``: the cosine schedule at a quarter of the lr (the reduced-lr proxies of "Can Small
  Training Runs Reliably Guide Data Curation?").

Every run is evaluated on the study's validation split.  Reported per schedule:

* the token axis: mean log-loss over the subsets at each budget and its second difference in
  ``log D`` (``E + B D^-a`` is convex in ``log D``: a negative second difference is the wrong way,
  the curvature that runs ``E`` to its bound);
* the ranking: Kendall's tau between the subsets' losses at each budget and at the reference (the
  largest budget under ``cosine``: the most training, as the final comparison does it).

Writes ``--out`` (markdown) and the same name with ``.json``.  Each command is a `pplaw`
subcommand run in this process; runs that exist are reused (resumable).

    PYTHONPATH=. python benchmarks/proxy_protocol.py --study /work/runs/cpu_tiny --work /tmp/proxy \\
        --out benchmarks/results/proxy_protocol.md
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from pplaw_jax.cli import main
from pplaw_jax.config import config_to_dict, load_config

SUBSETS = ("random", "low", "high", "band")
SCHEDULES = {"cosine": {}, "constant": {"schedule": "constant"}, "cosine-low": {"lr_scale": 0.25}}


def train_argv(cfg, study: Path, pool: Path, valid: Path, selection: Path, out: Path, schedule: dict) -> list[str]:
    t = cfg.train
    lr = t.lr * schedule.get("lr_scale", 1.0)
    return [
        "train",
        "--model",
        str(study / "base" / "pretrain" / "hf"),
        "--data",
        str(pool),
        "--selection",
        str(selection),
        "--out",
        str(out),
        "--seed",
        "0",
        "--seq-len",
        str(t.seq_len),
        "--batch-size",
        str(t.batch_size),
        "--lr",
        f"{lr:g}",
        "--warmup",
        f"{t.warmup:g}",
        "--schedule",
        schedule.get("schedule", t.schedule),
        "--eval-every",
        "0",
        "--eval-data",
        str(valid),
        "--text-field",
        cfg.data.text_field,
        "--id-field",
        cfg.data.id_field,
        *(["--eval-max-docs", str(cfg.data.eval_max_docs)] if cfg.data.eval_max_docs else []),
    ]


def run(study: Path, work: Path, budgets: list[float], moments: str) -> dict:
    cfg = load_config(study / "config.yaml")
    study = study.resolve()
    # the study's pool and validation split: its data stage's files (config paths are relative to
    # where `pplaw run` started, the repository root)
    data = study / "data"
    junk = sorted(data.glob("domain_train_junk*.jsonl"))
    pool = junk[0] if junk else Path(cfg.data.domain_train).resolve()
    valid = sorted(data.glob("domain_valid*.jsonl"))
    if not valid:
        raise SystemExit(f"{data}: no validation split (run the study's data stage with this version first)")
    valid = valid[-1]
    losses: dict = {}
    walls: dict = {}
    for name, budget, subset in itertools.product(SCHEDULES, budgets, SUBSETS):
        if name == "cosine-low" and budget == max(budgets):
            continue  # the reduced-lr proxy is a small-run protocol: its largest runs are not needed
        sel = work / "select" / f"{subset}_b{budget:g}"
        if not (sel / "summary.json").exists():
            assert (
                main(
                    [
                        "select",
                        "--landscape",
                        str(study / "landscape"),
                        "--tokens",
                        f"{budget:g}",
                        "--out",
                        str(sel),
                        "--method",
                        subset,
                        "--seed",
                        "0",
                        "--moments",
                        moments,
                    ]
                )
                == 0
            )
        out = work / "runs" / f"{name}_{subset}_b{budget:g}"
        if not (out / "eval.json").exists():
            t0 = time.perf_counter()
            assert main(train_argv(cfg, study, pool, valid, sel / "selection.parquet", out, SCHEDULES[name])) == 0
            walls[out.name] = time.perf_counter() - t0
        losses.setdefault(name, {}).setdefault(f"{budget:g}", {})[subset] = json.loads((out / "eval.json").read_text())[
            "domain_loss"
        ]
    return {
        "study": str(study),
        "config": config_to_dict(cfg)["train"],
        "budgets": budgets,
        "subsets": SUBSETS,
        "schedules": {k: v or "the study's train settings" for k, v in SCHEDULES.items()},
        "losses": losses,
        "wall_s": walls,
    }


def analyse(result: dict) -> dict:
    budgets = [f"{b:g}" for b in result["budgets"]]
    ref = result["losses"]["cosine"][budgets[-1]]
    out = {}
    for name, by_budget in result["losses"].items():
        have = [b for b in budgets if b in by_budget]
        mean_log = [float(np.mean(np.log(list(by_budget[b].values())))) for b in have]
        curvature = (mean_log[2] - 2 * mean_log[1] + mean_log[0]) if len(mean_log) == 3 else None
        taus = {}
        for b in have:
            x = [by_budget[b][s] for s in SUBSETS]
            y = [ref[s] for s in SUBSETS]
            taus[b] = float(stats.kendalltau(x, y).statistic)
        out[name] = {
            "mean_log_loss": dict(zip(have, mean_log)),
            "second_difference": curvature,
            "kendall_tau_vs_reference": taus,
            "rank_order": {b: sorted(SUBSETS, key=lambda s: by_budget[b][s]) for b in have},
        }
    return out


def write(result: dict, analysis: dict, out: Path, command: str) -> None:
    budgets = [f"{b:g}" for b in result["budgets"]]
    lines = [
        "# Proxy-run protocol: the token axis and the ranking of subsets under three schedules",
        "",
        f"Command: `{command}`",
        "",
        f"Study: `{result['study']}` (its base model, landscape and validation "
        "split); subsets re-drawn per budget (seed 0); one run each; loss on the validation split.",
        "",
        "| schedule | budget | " + " | ".join(SUBSETS) + " | ranking (best first) | Kendall tau vs reference |",
        "|---|---|" + "---|" * len(SUBSETS) + "---|---|",
    ]
    for name, by_budget in result["losses"].items():
        for b in budgets:
            if b not in by_budget:
                continue
            a = analysis[name]
            lines.append(
                f"| {name} | {b} | "
                + " | ".join(f"{by_budget[b][s]:.4f}" for s in SUBSETS)
                + f" | {' < '.join(a['rank_order'][b])} | {a['kendall_tau_vs_reference'][b]:.2f} |"
            )
    lines += [
        "",
        "Token axis (mean log-loss over the four subsets; second difference in log D: negative = "
        "the loss falls faster at larger D, which `E + B D^-a` cannot follow):",
        "",
        "| schedule | " + " | ".join(budgets) + " | second difference |",
        "|---|" + "---|" * (len(budgets) + 1),
    ]
    for name, a in analysis.items():
        cells = [f"{a['mean_log_loss'][b]:.4f}" if b in a["mean_log_loss"] else "—" for b in budgets]
        sd = a["second_difference"]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'—' if sd is None else f'{sd:+.4f}'} |")
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({**result, "analysis": analysis}, indent=1))


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, required=True, help="a study directory with base/, landscape/, data/")
    p.add_argument("--work", type=Path, required=True, help="where the selections and runs go")
    p.add_argument("--budgets", type=float, nargs=3, default=[2e4, 8e4, 3.2e5])
    p.add_argument("--moments", default="logppl")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/proxy_protocol.md"))
    args = p.parse_args()
    import sys

    result = run(args.study, args.work, args.budgets, args.moments)
    write(result, analyse(result), args.out, "PYTHONPATH=. python " + " ".join(sys.argv))


if __name__ == "__main__":
    cli()
