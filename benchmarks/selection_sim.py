"""The whole law-fitting -> fit -> supported target -> selection loop against known truths.

    PYTHONPATH=. python benchmarks/selection_sim.py [--replicates 10] [--families bowl,bowl-log,...]
        [--configs windows:ppl:bands,design:logppl:tilted,...] [--bayes] [--workers 2]
        [--noise 0.005] [--depth 0.02] [--out benchmarks/results/selection_sim.json]

Landscape: `pplaw_jax.simulate.heavy_tailed_landscape` (6000 chunks, ~1M tokens; log ppl a mixture
with a heavy right tail) or ``--landscape DIR`` (a `pplaw score` output).  Law-fitting budgets:
1/160, 1/40 and 1/10 of the landscape's tokens (a 16x span); deployment budget 1/40.  Each
replicate draws a fresh truth of its family (random optimum location), a fresh design (seeded)
and fresh noise, fits the paper's law (point fit with 100 group-bootstrap refits; with ``--bayes``
also NUTS, 2 chains x 300 + 300) and selects at the deployment budget, refusing when the interior
check fails (a refusal selects random).  Configurations are ``grid:moments:selector[:law]``.

``--sequential`` instead compares, on the same truths, fixed designs of 12, 16, 20 and 24 runs
with the sequential loop (a 12-run initial design, then 3 rounds of 4 Thompson-sampling proposals
at the deployment budget, refitting after each round; no early stop), as a function of the number
of runs spent.

Prints a Markdown table per target kind (point / posterior): for each family and configuration,
the recovery rate (target within 0.25 landscape sd of the best pool subset's moments), the median
regret against the best subset and against random (log-loss), the share of replicates not worse
than random by more than the noise sd, the refusal rate and the 90%-interval coverage of the
selected subset's true loss; and writes every replicate's record to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

DEFAULT_CONFIGS = "windows:ppl:bands,windows:logppl:bands,design:ppl:tilted,design:logppl:tilted," \
                  "design:ppl:bands,design:logppl:bands"


def _parse_config(text: str, args):
    from pplaw_jax.simulate import LoopConfig

    parts = text.split(":")
    grid, moments, selector = parts[:3]
    law = parts[3] if len(parts) > 3 else "ppl"
    return LoopConfig(grid=grid, moments=moments, selector=selector, law=law, noise=args.noise,
                      bayes=args.bayes)


_WORLD = None


def _init(landscape, budgets_frac, seed):
    global _WORLD
    import warnings

    warnings.simplefilter("ignore")
    from pplaw_jax.simulate import World, heavy_tailed_landscape

    if landscape:
        from pplaw_jax.landscape.directory import read_landscape

        land = read_landscape(landscape)
        ppl, n_tokens = land.ppl, land.n_tokens
    else:
        ppl, n_tokens = heavy_tailed_landscape(6000, seed)
    total = int(n_tokens.sum())
    _WORLD = World.build(ppl, n_tokens, [int(total * f) for f in budgets_frac])


def _job(job):
    from pplaw_jax.simulate import run_fixed, run_replicate, run_sequential

    family, cfg, seed, depth, mode = job
    t0 = time.perf_counter()
    try:
        if mode == "sequential":
            rec = {"sequential": run_sequential(_WORLD, family, cfg, seed, depth=depth),
                   "fixed": run_fixed(_WORLD, family, cfg, seed, depth=depth),
                   "family": family, "seed": seed, "moments": cfg.moments, "selector": cfg.selector, "law": cfg.law}
        else:
            rec = run_replicate(_WORLD, family, cfg, seed, depth)
    except Exception as e:  # a failed replicate is reported, not hidden
        rec = {"family": family, "seed": seed, "grid": cfg.grid, "moments": cfg.moments,
               "selector": cfg.selector if cfg.grid == "design" else "bands", "law": cfg.law,
               "error": f"{type(e).__name__}: {e}"}
    rec["wall_s"] = time.perf_counter() - t0
    return rec


def _key(family, moments, grid, selector, law, seed) -> str:
    return f"{family}|{moments}|{grid}|{selector}|{law}|{seed}"


def summarise(records: list[dict], noise: float, kind: str) -> list[dict]:
    rows = {}
    for r in records:
        if kind not in r:
            continue
        key = (r["family"], r["grid"], r["moments"], r["selector"], r["law"])
        rows.setdefault(key, []).append(r[kind])
    out = []
    for (family, grid, moments, selector, law), rs in rows.items():
        cov = [x["covered"] for x in rs if x["covered"] is not None]
        out.append({
            "family": family, "grid": grid, "moments": moments, "selector": selector, "law": law, "n": len(rs),
            "recovered": float(np.mean([x["recovered"] for x in rs])),
            "regret_opt_median": float(np.median([x["regret_opt"] for x in rs])),
            "regret_random_median": float(np.median([x["regret_random"] for x in rs])),
            "not_worse_than_random": float(np.mean([x["regret_random"] <= noise for x in rs])),
            "refused": float(np.mean([x["refused"] for x in rs])),
            "coverage": float(np.mean(cov)) if cov else float("nan"), "n_selected": len(cov),
        })
    return sorted(out, key=lambda r: (r["family"], r["grid"], r["moments"], r["selector"], r["law"]))


def markdown(rows: list[dict]) -> str:
    head = ("| family | grid | moments | selector | law | n | recovered | regret vs best (median) | "
            "regret vs random (median) | not worse than random by > noise | refused | 90% coverage (selected) |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['family']} | {r['grid']} | {r['moments']} | {r['selector']} | {r['law']} | {r['n']} | "
                     f"{r['recovered']:.2f} | {r['regret_opt_median']:.4f} | {r['regret_random_median']:.4f} | "
                     f"{r['not_worse_than_random']:.2f} | {r['refused']:.2f} | "
                     f"{r['coverage']:.2f} (n={r['n_selected']}) |")
    return "\n".join(lines)


def _share(flags) -> dict:
    """A proportion with its 95% Wilson interval."""
    from pplaw_jax.train.evaluate import wilson_interval

    k, n = int(np.sum(flags)), len(flags)
    lo, hi = wilson_interval(k, n)
    return {"p": k / n, "lo": lo, "hi": hi}


def summarise_sequential(records: list[dict], noise: float) -> list[dict]:
    """Per family, method (fixed / sequential) and runs spent: recovery, regret, P(regret < noise),
    proportions with 95% Wilson intervals over replicates."""
    cells = {}
    for r in records:
        if "sequential" not in r:
            continue
        for method in ("fixed", "sequential"):
            for step in r[method]["trace"]:
                cells.setdefault((r["family"], method, step["runs"]), []).append(step)
    out = []
    for (family, method, runs), steps in sorted(cells.items()):
        out.append({"family": family, "method": method, "runs": runs, "n": len(steps),
                    "recovered": _share([s["recovered"] for s in steps]),
                    "regret_opt_median": float(np.median([s["regret_opt"] for s in steps])),
                    "regret_below_noise": _share([s["regret_opt"] < noise for s in steps]),
                    "refused": _share([s["refused"] for s in steps]),
                    "not_worse_than_random": _share([s["regret_random"] <= noise for s in steps])})
    return out


def paired_sequential(records: list[dict], noise: float, n_boot: int = 4000) -> list[dict]:
    """Sequential minus fixed at equal runs spent, paired by replicate (same truth and initial
    design): mean difference of regret vs best and of the indicator regret < noise, each with a
    90% bootstrap interval over replicates."""
    cells = {}
    for r in records:
        if "sequential" not in r:
            continue
        fixed = {s["runs"]: s for s in r["fixed"]["trace"]}
        for s in r["sequential"]["trace"]:
            if s["runs"] in fixed:
                f = fixed[s["runs"]]
                cells.setdefault((r["family"], s["runs"]), []).append(
                    (s["regret_opt"] - f["regret_opt"], float(s["regret_opt"] < noise) - float(f["regret_opt"] < noise)))
    rng = np.random.default_rng(0)
    out = []
    for (family, runs), pairs in sorted(cells.items()):
        d = np.array(pairs)
        boot = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
        lo, hi = np.quantile(boot, [0.05, 0.95], axis=0)
        out.append({"family": family, "runs": runs, "n": len(d),
                    "regret_diff": float(d[:, 0].mean()), "regret_diff_ci90": [float(lo[0]), float(hi[0])],
                    "below_noise_diff": float(d[:, 1].mean()), "below_noise_diff_ci90": [float(lo[1]), float(hi[1])]})
    return out


def _fmt_share(x: dict) -> str:
    return f"{x['p']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}]"


def markdown_sequential(rows: list[dict], paired: list[dict]) -> str:
    lines = ["| family | method | runs | n | recovered | regret vs best (median) | regret < noise sd | "
             "refused | not worse than random by > noise |", "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['family']} | {r['method']} | {r['runs']} | {r['n']} | {_fmt_share(r['recovered'])} | "
                     f"{r['regret_opt_median']:.4f} | {_fmt_share(r['regret_below_noise'])} | "
                     f"{_fmt_share(r['refused'])} | {_fmt_share(r['not_worse_than_random'])} |")
    lines += ["", "Sequential minus fixed at equal runs, paired by replicate (90% bootstrap intervals):", "",
              "| family | runs | n | regret difference | regret < noise: difference in share |", "|" + "---|" * 5]
    for r in paired:
        lo, hi = r["regret_diff_ci90"]
        blo, bhi = r["below_noise_diff_ci90"]
        lines.append(f"| {r['family']} | {r['runs']} | {r['n']} | {r['regret_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}] | "
                     f"{r['below_noise_diff']:+.2f} [{blo:+.2f}, {bhi:+.2f}] |")
    return "\n".join(lines)


def main() -> None:
    from pplaw_jax.simulate import FAMILIES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=10)
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--configs", default=DEFAULT_CONFIGS)
    p.add_argument("--bayes", action="store_true", help="also fit NUTS and score the posterior target")
    p.add_argument("--noise", type=float, default=0.005)
    p.add_argument("--depth", type=float, default=0.02)
    p.add_argument("--landscape", help="a landscape directory instead of the synthetic one")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic landscape")
    p.add_argument("--sequential", action="store_true", help="fixed designs vs the sequential loop")
    p.add_argument("--out", default="benchmarks/results/selection_sim.json")
    args = p.parse_args()
    configs = [_parse_config(c, args) for c in args.configs.split(",")]
    mode = "sequential" if args.sequential else "fixed"
    jobs = [(f, c, s, args.depth, mode) for f in args.families.split(",") for c in configs
            for s in range(args.replicates)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial.jsonl")  # every finished replicate, so a killed run resumes
    records = [json.loads(line) for line in partial.read_text().splitlines()] if partial.exists() else []
    done = {_key(r["family"], r["moments"], r.get("grid", "design"), r["selector"], r["law"], r["seed"]) for r in records}
    jobs = [j for j in jobs if _key(j[0], j[1].moments, j[1].grid,
                                     j[1].selector if j[1].grid == "design" else "bands", j[1].law, j[2]) not in done]
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    # fresh workers every few replicates: each NUTS fit compiles new programs that JAX keeps cached
    with ctx.Pool(args.workers, initializer=_init, maxtasksperchild=4,
                  initargs=(args.landscape, (1 / 160, 1 / 40, 1 / 10), args.seed)) as pool, \
            open(partial, "a") as sink:
        for i, rec in enumerate(pool.imap_unordered(_job, jobs), 1):
            records.append(rec)
            sink.write(json.dumps(rec, default=str) + "\n")
            sink.flush()
            if i % 10 == 0 or i == len(jobs):
                print(f"[{time.perf_counter() - t0:7.0f}s] {i}/{len(jobs)} replicates", flush=True)
    errors = [r for r in records if "error" in r]
    tables = {kind: summarise(records, args.noise, kind) for kind in ("point", "posterior")}
    tables["sequential"] = summarise_sequential(records, args.noise)
    tables["sequential_paired"] = paired_sequential(records, args.noise)
    out.write_text(json.dumps({"args": vars(args), "wall_s": time.perf_counter() - t0, "tables": tables,
                               "records": records}, indent=1, default=str))
    if tables["sequential"]:
        print(f"\n### fixed designs vs the sequential loop (noise sd {args.noise}, depth {args.depth})\n")
        print(markdown_sequential(tables["sequential"], tables["sequential_paired"]))
    for kind in ("point", "posterior"):
        rows = tables[kind]
        if rows:
            print(f"\n### target: {kind} (noise sd {args.noise}, depth {args.depth})\n")
            print(markdown(rows))
    if errors:
        print(f"\n{len(errors)} replicates failed, e.g. {errors[0]['error']}")
    print(f"\nwrote {out} ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
