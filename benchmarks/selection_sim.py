"""The whole law-fitting -> fit -> supported target -> selection loop against known truths.

    PYTHONPATH=. python benchmarks/selection_sim.py [--replicates 10] [--families bowl,bowl-log,...]
        [--configs windows:ppl:bands,design:logppl:tilted,...] [--bayes] [--workers 2]
        [--noise 0.005] [--tol NOISE] [--depth 0.02] [--out benchmarks/results/selection_sim.md]

Landscape: `pplaw_jax.simulate.heavy_tailed_landscape` (6000 chunks, ~1M tokens; log ppl a mixture
with a heavy right tail) or ``--landscape DIR`` (a `pplaw score` output); the ``junk`` family always
runs on `junk_landscape` (same size, ``--junk-fraction`` of planted junk), the only landscape whose
junk labels are known.  Law-fitting budgets: 1/160, 1/40 and 1/10 of the landscape's tokens (a
16x span); deployment budget 1/40.  Each replicate draws a fresh truth of its family (random
optimum location), a fresh design (seeded) and fresh noise, chooses the law as `pplaw fit --law
auto` does (lack-of-fit test against the replicates' pure error, held-out error; a law that fails
is not used) and fits it (point fit with 100 group-bootstrap refits; with ``--bayes`` also NUTS, 2
chains x 300 + 300), and selects at the deployment budget, refusing when the interior check fails.
Configurations are ``grid:moments:selector[:law[:outlier_share]]`` (law default ``auto``; ``ppl``
is the paper's law alone, still refused when it fails its lack-of-fit test; ``outlier_share`` as
`pplaw fit --outlier-share`, default 0: the classical lack-of-fit test).

Scoring (`pplaw_jax.simulate.score`): the used subset is the selection, or random when the loop
refuses.  ``gain`` = log L(random) - log L(used) (0 for a refusal), ``headroom`` = log L(random) -
log L(best pool subset), ``regret`` = log L(used) - log L(best) (a refusal's regret is its
headroom: a refusal is not a win).  Outcomes with threshold ``tol`` (default the noise sd):
harmful (selected, gain < -tol), useful (selected, gain > tol), neutral (selected, within tol),
refused.  safe = 1 - harmful; a refusal is safe but never useful.

Prints, and writes to ``--out`` (Markdown), a table per target kind (point / posterior): for each
family and configuration, n, the share of truths with an interior optimum, the mean headroom in
noise sd, refusal / useful / harmful / safe rates with 95% Wilson intervals, the mean regret
(refusals included, at their headroom), recovery and 90%-interval coverage where the loop
selected; then the verdict against the targets (truths with headroom >= 3
noise sd: useful >= 0.70 and harmful <= 0.05; the rest: harmful <= 0.05), judged on the point
estimates with what the intervals say beside it.  Every replicate's record goes to the JSON next to
the Markdown (same name, ``.json``); finished replicates also to ``.partial.jsonl``, so a killed run
resumes.

``--sequential`` instead compares, on the same truths, fixed designs of 12, 16, 20 and 24 runs
with the sequential loop (a 12-run initial design, then 3 rounds of 4 Thompson-sampling proposals
at the deployment budget, refitting after each round; no early stop), as a function of the number
of runs spent, with the same scoring (a refusal at a round scores its headroom as regret).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_CONFIGS = (
    "windows:ppl:bands,windows:logppl:bands,design:ppl:tilted,design:logppl:tilted,design:ppl:bands,design:logppl:bands"
)
BUDGET_FRACTIONS = (1 / 160, 1 / 40, 1 / 10)
N_CHUNKS = 6000


def _parse_config(text: str, args):
    from pplaw_jax.simulate import LoopConfig

    parts = text.split(":")
    grid, moments, selector = parts[:3]
    law = parts[3] if len(parts) > 3 else "auto"
    outlier_share = float(parts[4]) if len(parts) > 4 else 0.0
    return LoopConfig(
        grid=grid,
        moments=moments,
        selector=selector,
        law=law,
        noise=args.noise,
        bayes=args.bayes,
        tol=args.tol,
        outlier_share=outlier_share,
    )


_WORLDS: dict = {}


def _init(landscape, budgets_frac, seed, need_main, need_junk, junk_fraction):
    import warnings

    warnings.simplefilter("ignore")
    from pplaw_jax.simulate import World, heavy_tailed_landscape, junk_landscape

    def build(ppl, n_tokens, junk=None):
        total = int(np.sum(n_tokens))
        return World.build(ppl, n_tokens, [int(total * f) for f in budgets_frac], junk=junk)

    if need_main:
        if landscape:
            from pplaw_jax.landscape.directory import read_landscape

            land = read_landscape(landscape)
            _WORLDS["main"] = build(land.ppl, land.n_tokens)
        else:
            _WORLDS["main"] = build(*heavy_tailed_landscape(N_CHUNKS, seed))
    if need_junk:
        ppl, n_tokens, junk = junk_landscape(N_CHUNKS, junk_fraction, seed)
        _WORLDS["junk"] = build(ppl, n_tokens, junk)


def _world(family: str):
    return _WORLDS["junk" if family == "junk" else "main"]


def _job(job):
    from pplaw_jax.simulate import run_fixed, run_replicate, run_sequential

    family, cfg, seed, depth, mode = job
    t0 = time.perf_counter()
    try:
        if mode == "sequential":
            world = _world(family)
            rec = {
                "sequential": run_sequential(world, family, cfg, seed, depth=depth),
                "fixed": run_fixed(world, family, cfg, seed, depth=depth),
                "family": family,
                "seed": seed,
                "grid": cfg.grid,
                "moments": cfg.moments,
                "selector": cfg.selector if cfg.grid == "design" else "bands",
                "law": cfg.label,
            }
        else:
            rec = run_replicate(_world(family), family, cfg, seed, depth)
    except Exception as e:  # a failed replicate is reported, not hidden
        rec = {
            "family": family,
            "seed": seed,
            "grid": cfg.grid,
            "moments": cfg.moments,
            "selector": cfg.selector if cfg.grid == "design" else "bands",
            "law": cfg.label,
            "error": f"{type(e).__name__}: {e}",
        }
    rec["wall_s"] = time.perf_counter() - t0
    return rec


def _key(family, moments, grid, selector, law, seed) -> str:
    return f"{family}|{moments}|{grid}|{selector}|{law}|{seed}"


def _mean(xs) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def summarise_cell(pairs: list[tuple[dict, dict]]) -> dict:
    """Rates and means of one table cell from ``(replicate record, score)`` pairs."""
    from pplaw_jax.simulate import outcome_rates, share, verdict

    scores = [s for _, s in pairs]
    selected = [s for s in scores if not s["refused"]]
    noise = pairs[0][0]["noise"]
    interior = [r["interior"] for r, _ in pairs if r.get("interior") is not None]
    return {
        "n": len(pairs),
        "noise": noise,
        "tol": scores[0]["tol"],
        "interior": _mean(interior),
        "headroom_mean": _mean([s["headroom"] for s in scores]),
        "headroom_sd": _mean([s["headroom"] for s in scores]) / noise,
        **outcome_rates(scores),
        "regret_mean": _mean([s["regret"] for s in scores]),
        "regret_median": float(np.median([s["regret"] for s in scores])),
        "left_on_table_mean": _mean([s["left_on_table"] for s in scores if s["refused"]]),
        "gain_mean_selected": _mean([s["gain"] for s in selected]),
        "recovered_selected": share([s["recovered"] for s in selected]),
        "coverage_selected": share([s["covered"] for s in selected if s["covered"] is not None]),
        "verdict": verdict(pairs),
    }


def summarise(records: list[dict], kind: str) -> list[dict]:
    """One row per family x configuration for target `kind` (point | posterior)."""
    cells = {}
    for r in records:
        if kind not in r or "error" in r:
            continue
        key = (r["family"], r["grid"], r["moments"], r["selector"], r["law"])
        cells.setdefault(key, []).append((r, r[kind]))
    out = [
        {"family": f, "grid": g, "moments": m, "selector": s, "law": law, "kind": kind, **summarise_cell(pairs)}
        for (f, g, m, s, law), pairs in cells.items()
    ]
    return sorted(out, key=lambda r: (r["family"], r["grid"], r["moments"], r["selector"], r["law"]))


def _fmt_share(x: dict) -> str:
    if not x["n"]:
        return "- (n=0)"
    return f"{x['p']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}]"


def _fmt_sel(x: dict) -> str:
    return "- (n=0)" if not x["n"] else f"{x['p']:.2f} (n={x['n']})"


def _verdict_text(v: dict) -> str:
    return f"{'met' if v['met'] else 'not met'} (interval: {v['by_interval']})"


def markdown(rows: list[dict]) -> str:
    head = (
        "| family | grid | moments | selector | law | n | interior | headroom (noise sd) | refused | useful | "
        "harmful | safe | regret, mean | recovered (selected) | 90% coverage (selected) | verdict |"
    )
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['grid']} | {r['moments']} | {r['selector']} | {r['law']} | {r['n']} | "
            f"{r['interior']:.2f} | {r['headroom_sd']:.1f} | {_fmt_share(r['refusal'])} | {_fmt_share(r['useful'])} | "
            f"{_fmt_share(r['harmful'])} | {_fmt_share(r['safe'])} | {r['regret_mean']:.4f} | "
            f"{_fmt_sel(r['recovered_selected'])} | {_fmt_sel(r['coverage_selected'])} | "
            f"{_verdict_text(r['verdict'])} |"
        )
    return "\n".join(lines)


def markdown_verdict(rows: list[dict]) -> str:
    """The verdict split by truth group: with value (interior optimum, headroom >= 3 noise sd) or not."""
    lines = [
        "| family | grid | moments | selector | law | truths | n | useful | harmful | target | "
        "point estimate | 95% interval |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        for group, label in (("value", "headroom >= 3 sd"), ("no_value", "the rest")):
            g = r["verdict"][group]
            if not g["n"]:
                continue
            lines.append(
                f"| {r['family']} | {r['grid']} | {r['moments']} | {r['selector']} | {r['law']} | {label} | "
                f"{g['n']} | {_fmt_share(g['useful'])} | {_fmt_share(g['harmful'])} | {g['targets']} | "
                f"{'met' if g['met'] else 'not met'} | {g['by_interval']} |"
            )
    return "\n".join(lines)


def summarise_sequential(records: list[dict]) -> list[dict]:
    """Per family, configuration, method (fixed / sequential) and runs spent: recovery, regret
    (refusals at their headroom), P(regret < noise) and the outcome rates, proportions with 95%
    Wilson intervals over replicates."""
    from pplaw_jax.simulate import outcome_rates, share

    cells = {}
    for r in records:
        if "sequential" not in r:
            continue
        for method in ("fixed", "sequential"):
            head = r[method]
            for step in head["trace"]:
                cells.setdefault(
                    (r["family"], r.get("grid", "design"), r["moments"], r["selector"], r["law"], method, step["runs"]),
                    [],
                ).append((head, step))
    out = []
    for (family, grid, moments, selector, law, method, runs), pairs in sorted(cells.items()):
        steps = [s for _, s in pairs]
        noise = pairs[0][0]["noise"]
        rates = outcome_rates(steps)
        out.append(
            {
                "family": family,
                "grid": grid,
                "moments": moments,
                "selector": selector,
                "law": law,
                "method": method,
                "runs": runs,
                "n": len(steps),
                "noise": noise,
                "headroom_sd": _mean([s["headroom"] for s in steps]) / noise,
                "recovered": share([s["recovered"] for s in steps]),
                "regret_mean": _mean([s["regret"] for s in steps]),
                "regret_median": float(np.median([s["regret"] for s in steps])),
                "regret_below_noise": share([s["regret"] < noise for s in steps]),
                "refused": rates["refusal"],
                "useful": rates["useful"],
                "harmful": rates["harmful"],
                "safe": rates["safe"],
            }
        )
    return out


def paired_sequential(records: list[dict], n_boot: int = 4000) -> list[dict]:
    """Sequential minus fixed at equal runs spent, paired by replicate (same truth and initial
    design): mean difference of regret (a refusal at its headroom) and of the indicator regret <
    noise, each with a 90% bootstrap interval over replicates."""
    cells = {}
    for r in records:
        if "sequential" not in r:
            continue
        noise = r["sequential"]["noise"]
        fixed = {s["runs"]: s for s in r["fixed"]["trace"]}
        for s in r["sequential"]["trace"]:
            if s["runs"] in fixed:
                f = fixed[s["runs"]]
                cells.setdefault((r["family"], r["moments"], r["selector"], r["law"], s["runs"]), []).append(
                    (s["regret"] - f["regret"], float(s["regret"] < noise) - float(f["regret"] < noise))
                )
    rng = np.random.default_rng(0)
    out = []
    for (family, moments, selector, law, runs), pairs in sorted(cells.items()):
        d = np.array(pairs)
        boot = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
        lo, hi = np.quantile(boot, [0.05, 0.95], axis=0)
        out.append(
            {
                "family": family,
                "moments": moments,
                "selector": selector,
                "law": law,
                "runs": runs,
                "n": len(d),
                "regret_diff": float(d[:, 0].mean()),
                "regret_diff_ci90": [float(lo[0]), float(hi[0])],
                "below_noise_diff": float(d[:, 1].mean()),
                "below_noise_diff_ci90": [float(lo[1]), float(hi[1])],
            }
        )
    return out


def markdown_sequential(rows: list[dict], paired: list[dict]) -> str:
    lines = [
        "| family | moments | selector | law | method | runs | n | headroom (noise sd) | recovered | "
        "regret, mean | regret < noise sd | refused | useful | harmful | safe |",
        "|" + "---|" * 15,
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['moments']} | {r['selector']} | {r['law']} | {r['method']} | {r['runs']} | "
            f"{r['n']} | {r['headroom_sd']:.1f} | {_fmt_share(r['recovered'])} | {r['regret_mean']:.4f} | "
            f"{_fmt_share(r['regret_below_noise'])} | {_fmt_share(r['refused'])} | "
            f"{_fmt_share(r['useful'])} | {_fmt_share(r['harmful'])} | {_fmt_share(r['safe'])} |"
        )
    lines += [
        "",
        "Sequential minus fixed at equal runs, paired by replicate (regret of a refusal = its headroom; "
        "90% bootstrap intervals):",
        "",
        "| family | moments | selector | law | runs | n | regret difference | regret < noise: difference in share |",
        "|" + "---|" * 8,
    ]
    for r in paired:
        lo, hi = r["regret_diff_ci90"]
        blo, bhi = r["below_noise_diff_ci90"]
        lines.append(
            f"| {r['family']} | {r['moments']} | {r['selector']} | {r['law']} | {r['runs']} | {r['n']} | "
            f"{r['regret_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}] | "
            f"{r['below_noise_diff']:+.2f} [{blo:+.2f}, {bhi:+.2f}] |"
        )
    return "\n".join(lines)


def _paths(out: str) -> tuple[Path, Path, Path]:
    """Markdown, JSON and partial-records paths from ``--out`` (a .md or .json name)."""
    p = Path(out)
    stem = p.with_suffix("") if p.suffix in (".md", ".json") else p
    return stem.with_suffix(".md"), stem.with_suffix(".json"), stem.with_suffix(".partial.jsonl")


def report(args, records: list[dict], tables: dict, wall_s: float) -> str:
    """The Markdown written to ``--out`` (and printed)."""
    from pplaw_jax.simulate import HARMFUL_MAX, HEADROOM_SD, USEFUL_MIN

    tol = args.noise if args.tol is None else args.tol
    parts = [
        f"# `benchmarks/selection_sim.py`{' --sequential' if args.sequential else ''}: the selection loop "
        "against known truths",
        "",
        "Command:",
        "",
        "    PYTHONPATH=. python " + " ".join(sys.argv),
        "",
        f"Noise sd {args.noise} on log-loss; outcome threshold tol {tol}; depth {args.depth}; "
        f"landscape {args.landscape or f'heavy_tailed_landscape({N_CHUNKS}, seed={args.seed})'} "
        f"(family junk: junk_landscape({N_CHUNKS}, fraction={args.junk_fraction}, seed={args.seed})); "
        f"budgets {', '.join(f'1/{round(1 / f)}' for f in BUDGET_FRACTIONS)} of the landscape's tokens, "
        f"deployment 1/40; {len(records)} replicate records; {wall_s:.0f} s.",
        "",
        "A refusal uses random: gain 0, regret = its headroom (left on the table). Outcomes: harmful = "
        "selected and gain < -tol, useful = selected and gain > tol, neutral = selected within tol; "
        "safe = 1 - harmful (a refusal is safe, never useful). Rates with 95% Wilson intervals. "
        f"Targets: truths with headroom >= {HEADROOM_SD:g} noise sd (optimum interior or on the edge of "
        "the corpus, both valid answers): useful >= "
        f"{USEFUL_MIN:.2f} and harmful <= {HARMFUL_MAX:.2f}; the rest: harmful <= {HARMFUL_MAX:.2f} "
        "(verdict on the point estimates; 'interval' says whether the 95% intervals confirm it).",
    ]
    if tables.get("sequential"):
        parts += [
            "",
            f"### fixed designs vs the sequential loop (noise sd {args.noise}, depth {args.depth})",
            "",
            markdown_sequential(tables["sequential"], tables["sequential_paired"]),
        ]
    for kind in ("point", "posterior"):
        rows = tables.get(kind)
        if rows:
            parts += [
                "",
                f"### target: {kind} (noise sd {args.noise}, tol {tol}, depth {args.depth})",
                "",
                markdown(rows),
                "",
                f"Verdict by truth group ({kind} target):",
                "",
                markdown_verdict(rows),
            ]
    errors = [r for r in records if "error" in r]
    if errors:
        parts += ["", f"{len(errors)} replicates failed, e.g. {errors[0]['error']}"]
    return "\n".join(parts) + "\n"


def main() -> None:
    from pplaw_jax.simulate import FAMILIES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replicates", type=int, default=10)
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--configs", default=DEFAULT_CONFIGS)
    p.add_argument("--bayes", action="store_true", help="also fit NUTS and score the posterior target")
    p.add_argument("--noise", type=float, default=0.005, help="sd of the simulated noise on log-loss")
    p.add_argument(
        "--tol",
        type=float,
        default=None,
        help="threshold of useful / harmful on the true log-loss gain (default: --noise)",
    )
    p.add_argument(
        "--depth",
        type=float,
        default=0.02,
        help="scale of the truths: the median pool subset sits this far above the best in "
        "log-loss (junk: a random subset does)",
    )
    p.add_argument("--junk-fraction", type=float, default=0.3, help="planted junk share of the junk landscape")
    p.add_argument("--landscape", help="a landscape directory instead of the synthetic one")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic landscapes")
    p.add_argument("--sequential", action="store_true", help="fixed designs vs the sequential loop")
    p.add_argument(
        "--out",
        default="benchmarks/results/selection_sim.md",
        help="Markdown report; the JSON of every record goes next to it (.json)",
    )
    args = p.parse_args()
    families = args.families.split(",")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        p.error(f"unknown families {unknown}; known: {', '.join(FAMILIES)}")
    configs = [_parse_config(c, args) for c in args.configs.split(",")]
    mode = "sequential" if args.sequential else "fixed"
    jobs = [(f, c, s, args.depth, mode) for f in families for c in configs for s in range(args.replicates)]
    md_path, json_path, partial = _paths(args.out)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    records = [json.loads(line) for line in partial.read_text().splitlines()] if partial.exists() else []
    done = {
        _key(r["family"], r["moments"], r.get("grid", "design"), r["selector"], r["law"], r["seed"]) for r in records
    }
    jobs = [
        j
        for j in jobs
        if _key(j[0], j[1].moments, j[1].grid, j[1].selector if j[1].grid == "design" else "bands", j[1].label, j[2])
        not in done
    ]
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    need_junk = any(j[0] == "junk" for j in jobs)
    need_main = any(j[0] != "junk" for j in jobs)
    # fresh workers every few replicates: each NUTS fit compiles new programs that JAX keeps cached
    with (
        ctx.Pool(
            args.workers,
            initializer=_init,
            maxtasksperchild=4,
            initargs=(args.landscape, BUDGET_FRACTIONS, args.seed, need_main, need_junk, args.junk_fraction),
        ) as pool,
        open(partial, "a") as sink,
    ):
        for i, rec in enumerate(pool.imap_unordered(_job, jobs), 1):
            records.append(rec)
            sink.write(json.dumps(rec, default=str) + "\n")
            sink.flush()
            if i % 10 == 0 or i == len(jobs):
                print(f"[{time.perf_counter() - t0:7.0f}s] {i}/{len(jobs)} replicates", flush=True)
    tables = {kind: summarise(records, kind) for kind in ("point", "posterior")}
    tables["sequential"] = summarise_sequential(records)
    tables["sequential_paired"] = paired_sequential(records)
    wall = time.perf_counter() - t0
    json_path.write_text(
        json.dumps({"args": vars(args), "wall_s": wall, "tables": tables, "records": records}, indent=1, default=str)
    )
    text = report(args, records, tables, wall)
    md_path.write_text(text)
    print("\n" + text)
    print(f"wrote {md_path} and {json_path} ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
