"""`pplaw run CONFIG.yaml [key=value ...]`: the whole study, one cached stage after another.

Stages exchange files only, and each one calls the same `pplaw` subcommand a user would, so a
study is exactly the sequence of commands recorded in `OUT/commands.log`:

  0. data       corpora (optionally written from the Python installation) and cloze tasks
  1. base       the base model: a checkpoint, or a small Llama pretrained here from scratch
  2. landscape  `pplaw score` of the domain training split
  3. grid       `pplaw select design` (or `windows`) + one `pplaw train` per subset, then
                `grid.rounds` rounds of `pplaw fit` -> `pplaw propose` -> `pplaw train` (plus a
                random control run), stopping when the optimum is located -> runs.csv
  4. fit        `pplaw fit` of the law (its rivals, the data-only law among them, are compared inside)
  5. select     DOS (posterior and point targets) and baselines at the final budget, re-drawn per
                seed; a law-guided method whose fit has no interior optimum is refused
                (select/<method>/seed<k>/refused.json) and not trained
  6. final      `pplaw train` + `pplaw eval` for every selection and seed (and the base model)
  7. report     report.md with tables and figures

A stage is skipped when its completion file exists (each subcommand writes its summary last and
resumes its own partial work), so re-running after a crash continues where it stopped. Re-running
with another configuration re-runs exactly the stages whose inputs changed and those downstream
(`pplaw_jax.stages`; their old outputs are moved to OUT/superseded/), `--force STAGE` does so
without a change, and `--until STAGE` stops after a stage.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import replace
from pathlib import Path

import yaml

from pplaw_jax.config import SelectConfig, StudyConfig, config_to_dict, load_config, settings_argv
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import atomic_write, discard_temporaries, output_lock, write_json, write_jsonl, write_text
from pplaw_jax.logs import get_logger
from pplaw_jax.select.io import aliased_methods
from pplaw_jax.stages import STAGES, stages_record, stage_keys, stale_stages, supersede

log = get_logger("run")
COMPILATION_CACHE = ".jax_cache"  # under out_dir (hidden: not a study output)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="study YAML (see experiments/configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. final.seeds=[0,1]")
    parser.add_argument("--until", default=None, choices=Study.STAGES, metavar="STAGE",
                        help="stop after this stage (data, base, landscape, grid, fit, select, final, report)")
    parser.add_argument("--force", action="append", default=[], choices=tuple(STAGES), metavar="STAGE",
                        help="re-run this stage and everything downstream of it even if its inputs are "
                             "unchanged (its outputs are moved to OUT/superseded/); repeatable")


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    with output_lock(cfg.out_dir):  # one study process per out_dir
        from pplaw_jax.distributed import configure_compilation_cache

        # every stage runs in this process: one cache, kept with the study, so a rerun reuses it too
        configure_compilation_cache(Path(cfg.out_dir) / COMPILATION_CACHE)
        Study(cfg, force=set(args.force)).run(stop_after=args.until)
    return 0


class Study:
    """Runs the stages of one study into `cfg.out_dir`."""

    STAGES = ("data", "base", "landscape", "grid", "fit", "select", "final", "report")

    def __init__(self, cfg: StudyConfig, force: set[str] = frozenset()):
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self._check_inputs()  # before anything is written: a typo in a path leaves no study behind
        self.out.mkdir(parents=True, exist_ok=True)
        self._discard_temporaries()
        self._reconcile_config(force)
        self.data = dict(
            general_train=cfg.data.general_train,
            general_test=cfg.data.general_test,
            domain_train=cfg.data.domain_train,
            domain_test=cfg.data.domain_test,
            target_eval=cfg.data.target_eval,
        )

    # ---------------------------------------------------------------- plumbing
    def _check_inputs(self) -> None:
        """Every corpus the config names must resolve to files (one line naming the key if not)."""
        from pplaw_jax.data.readers import TFDS_PREFIX, resolve_files

        for key in ("general_train", "general_test", "domain_train", "domain_test", "target_eval"):
            spec = getattr(self.cfg.data, key)
            if spec is not None and not spec.startswith(TFDS_PREFIX):
                try:
                    resolve_files(spec)
                except PplawError as e:
                    raise PplawError(f"config data.{key}: {e}") from None

    def _discard_temporaries(self) -> None:
        """Remove what a killed study left in the files it writes itself (the subcommands clean
        their own output directories)."""
        discard_temporaries(self.out, owned=("config.yaml", "stages.json", "report.md"))
        discard_temporaries(self.out / "data")
        discard_temporaries(self.out / "report_figures")
        discard_temporaries(self.out / "base", owned=("init_config.json", "tokenizer"))
        discard_temporaries(self.out / "grid", owned=("runs.csv",))
        for round_dir in self.out.glob("grid/round*"):
            discard_temporaries(round_dir, owned=("runs.csv", "round.json"))

    def _reconcile_config(self, force: set[str]) -> None:
        """Move aside the outputs this configuration cannot reuse (`pplaw_jax.stages`: a stage whose
        inputs changed since the recorded config.yaml, or forced, and all downstream of it), then
        record the configuration. The moves come first, so a kill in between repeats them."""
        path = self.out / "config.yaml"
        current = config_to_dict(self.cfg)
        previous = None
        if path.exists():
            try:
                previous = config_to_dict(load_config(path))
            except PplawError as e:
                raise PplawError(f"{path}: the study's recorded configuration no longer loads ({e}); "
                                 f"use a new out_dir") from None
        old_keys = stage_keys(previous if previous is not None else current)
        for stage in stale_stages(previous, current, force):
            moved = supersede(self.out, stage, old_keys[stage])
            if moved is not None:
                log.info(f"stage {stage}: inputs changed{' (forced)' if stage in force else ''}; "
                         f"previous outputs moved to {moved.relative_to(self.out)}")
        write_text(path, yaml.safe_dump(current, sort_keys=True))
        write_json(self.out / "stages.json", stages_record(current))

    def pplaw(self, *argv: str, allow_exit: tuple[int, ...] = ()) -> int:
        """Run one `pplaw` subcommand in-process, logging the equivalent shell command; an exit code
        other than 0 (and `allow_exit`) fails the study."""
        from pplaw_jax.cli import main

        argv = [str(a) for a in argv]
        with open(self.out / "commands.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')}  pplaw {shlex.join(argv)}\n")
        log.info(f">>> pplaw {shlex.join(argv)}")
        code = main(argv)
        if code != 0 and code not in allow_exit:
            raise PplawError(f"stage command failed with exit code {code}: pplaw {shlex.join(argv)}")
        return code

    def run(self, stop_after: str | None = None) -> None:
        if stop_after is not None and stop_after not in self.STAGES:
            raise PplawError(f"--until must be one of {', '.join(self.STAGES)}, got {stop_after!r}")
        for i, stage in enumerate(self.STAGES, 1):
            log.info(f"=== stage {stage} ({i}/{len(self.STAGES)})")
            getattr(self, f"stage_{stage}")()
            if stage == stop_after:
                return

    # ---------------------------------------------------------------- stages
    def stage_data(self) -> None:
        d = self.cfg.data
        if d.builtin == "cpython-docs":
            from pplaw_jax.data.cpython_docs import write_cpython_docs

            self.data.update(write_cpython_docs(self.out / "data"))
        elif d.builtin is not None:
            raise PplawError(f"data.builtin: unknown corpus {d.builtin!r} (known: cpython-docs)")
        missing = [k for k in ("domain_train", "domain_test") if not self.data[k]]
        if missing:
            raise PplawError(f"config data.{missing[0]} is required (or data.builtin)")
        if self.cfg.base_model is None and not self.data["general_train"]:
            raise PplawError("a scratch base model needs data.general_train")
        if d.eval_doc_chars:
            for key in ("domain_test", "general_test", "target_eval"):
                if self.data[key]:
                    self.data[key] = self._cut_eval_docs(key, d.eval_doc_chars)
        self.tasks = self.cfg.final.tasks or self._make_cloze_tasks()

    def _cut_eval_docs(self, key: str, n_chars: int) -> str:
        """A copy of a test corpus with every document cut to its central `n_chars` characters.

        Book-length test documents would make every evaluation slow; a central window keeps
        each document represented (and avoids front matter) at a bounded cost.
        """
        from pplaw_jax.data import iter_documents

        path = self.out / "data" / f"{key}_cut{n_chars}.jsonl"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = []
            for doc in iter_documents(self.data[key], text_field=self.cfg.data.text_field, id_field=self.cfg.data.id_field,
                                      max_docs=self.cfg.data.eval_max_docs):
                start = max(0, (len(doc.text) - n_chars) // 2)
                rows.append({"id": doc.doc_id, "text": doc.text[start:start + n_chars]})
            write_jsonl(path, rows)
        return str(path)

    def _make_cloze_tasks(self) -> str:
        from pplaw_jax.data import iter_documents
        from pplaw_jax.data.cloze import make_cloze_tasks

        path = self.out / "data" / "domain_cloze.jsonl"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            texts = [doc.text for doc in iter_documents(self.data["domain_test"], text_field=self.cfg.data.text_field,
                                                        id_field=self.cfg.data.id_field)]
            write_jsonl(path, make_cloze_tasks(texts, n_tasks=200, seed=self.cfg.seed))
        return str(path)

    def stage_base(self) -> None:
        if self.cfg.base_model is not None:
            self.base = self.cfg.base_model
            return
        from pplaw_jax.train import train_tokenizer

        s = self.cfg.scratch
        base = self.out / "base"
        tok_dir = base / "tokenizer"
        if not tok_dir.exists():
            train_tokenizer(self.data["general_train"], s.vocab_size, tok_dir, max_docs=s.tokenizer_max_docs,
                            text_field=self.cfg.data.text_field, id_field=self.cfg.data.id_field)
        init_cfg = base / "init_config.json"
        hf = dict(s.hf_config, vocab_size=s.vocab_size,
                  max_position_embeddings=max(s.train.seq_len, self.cfg.landscape.seq_len, self.cfg.train.seq_len))
        write_text(init_cfg, json.dumps(hf, indent=1))
        run_dir = base / "pretrain"
        self.base = str(run_dir / "hf")
        if (run_dir / "eval.json").exists():
            return
        self.pplaw(
            "train", "--model", f"scratch:{init_cfg}", "--tokenizer", tok_dir, "--data", self.data["general_train"],
            "--out", run_dir, "--steps", s.steps, "--seed", self.cfg.seed,
            *self._eval_args(general_only=True), "--text-field", self.cfg.data.text_field,
            "--id-field", self.cfg.data.id_field, *(["--max-docs", s.max_docs] if s.max_docs else []),
            *settings_argv(s.train),
        )

    def _eval_args(self, general_only: bool = False) -> list[str]:
        args = []
        if not general_only:
            args += ["--eval-data", self.data["domain_test"]]
        if self.data["general_test"]:
            args += ["--general-eval-data", self.data["general_test"]]
        if self.data["target_eval"] and not general_only:
            args += ["--target-eval-data", self.data["target_eval"]]
        if self.cfg.data.eval_max_docs:
            args += ["--eval-max-docs", self.cfg.data.eval_max_docs]
        return args

    def stage_landscape(self) -> None:
        self.landscape = self.out / "landscape"
        if (self.landscape / "summary.json").exists():
            return
        argv = ["score", "--model", self.base, "--data", self.data["domain_train"], "--out", self.landscape,
                "--text-field", self.cfg.data.text_field, "--id-field", self.cfg.data.id_field]
        if self.cfg.data.domain_max_docs:
            argv += ["--max-docs", self.cfg.data.domain_max_docs]
        self.pplaw(*argv, *settings_argv(self.cfg.landscape))

    def _train(self, selection: Path, out: Path, seed: int) -> None:
        if (out / "eval.json").exists():
            return
        self.pplaw(
            "train", "--model", self.base, "--data", self.data["domain_train"], "--selection", selection,
            "--out", out, "--seed", seed, "--text-field", self.cfg.data.text_field,
            "--id-field", self.cfg.data.id_field, *self._eval_args(), *settings_argv(self.cfg.train),
        )

    def stage_grid(self) -> None:
        import pandas as pd

        g, seed = self.cfg.grid, self.cfg.seed
        grid = self.out / "grid"
        self.runs_csv = grid / "runs.csv"
        if self.runs_csv.exists():
            return
        sel_dir = grid / "selections"
        if not (sel_dir / f"{g.kind}.json").exists():
            self.pplaw("select", g.kind, "--landscape", self.landscape, "--out", sel_dir, "--seed", seed,
                       *settings_argv(getattr(g, g.kind)))
        runs = self._train_manifest(sel_dir, grid / "runs", 0)
        if runs.empty:
            raise PplawError(f"no grid subsets in {sel_dir / 'manifest.csv'}")
        round_csv = grid / "round0" / "runs.csv"
        round_csv.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(round_csv, lambda tmp: runs.to_csv(tmp, index=False))
        for r in range(1, g.rounds + 1):
            done = grid / f"round{r}" / "round.json"
            if not done.exists():
                self._sequential_round(r, round_csv)
            round_csv = grid / f"round{r}" / "runs.csv"
            if g.stop_early and json.loads(done.read_text())["located"]:
                break
        runs = pd.read_csv(round_csv, dtype={"group": str})
        atomic_write(self.runs_csv, lambda tmp: runs.to_csv(tmp, index=False))

    def _train_manifest(self, sel_dir: Path, runs_dir: Path, round_: int):
        """Train every subset of a manifest (design, windows or proposals); their runs.csv rows."""
        import pandas as pd

        manifest = pd.read_csv(sel_dir / "manifest.csv", dtype={"group": str})
        rows = []
        for i, r in enumerate(manifest.itertuples(), 1):
            run_dir = runs_dir / r.name
            log.info(f"run {i}/{len(manifest)} of {sel_dir.relative_to(self.out)}: {r.name}")
            self._train(sel_dir / r.name / "selection.parquet", run_dir, self.cfg.seed + int(r.seed))
            rows.append(self._run_row(r.name, r.group, run_dir, round_))
        return pd.DataFrame(rows)

    def _run_row(self, name: str, group: str, run_dir: Path, round_: int) -> dict:
        ev = json.loads((run_dir / "eval.json").read_text())
        return dict(run_id=name, group=group, round=round_, tokens=ev["tokens"], loss=ev[self.cfg.grid.metric],
                    domain_loss=ev["domain_loss"], general_loss=ev.get("general_loss"),
                    target_loss=ev.get("target_loss"),
                    **{k: ev[k] for k in ("mu_ppl", "sigma_ppl", "mu_logppl", "sigma_logppl")})

    def _sequential_round(self, r: int, prev_csv: Path) -> None:
        """Round `r`: fit the runs so far, propose the next runs and, unless the optimum is located
        (and ``grid.stop_early``), train them and a re-drawn random control at the final budget;
        `round.json` marks it done."""
        import pandas as pd

        g, f = self.cfg.grid, self.cfg.fit
        rdir = self.out / "grid" / f"round{r}"
        fit_dir = rdir / "fit"
        if not (fit_dir / "fit.json").exists():
            self.pplaw(*self._fit_argv(prev_csv, fit_dir, replace(f, compare=False, allow_unconverged=True)))
        prop = rdir / "proposals"
        budget = f"{self.cfg.final.budget:g}"
        if not (prop / "propose.json").exists():
            self.pplaw("propose", "--fit", fit_dir, "--landscape", self.landscape, "--tokens", budget,
                       "--out", prop, "--prefix", f"r{r}q", "--seed", self.cfg.seed + 1000 * r,
                       *settings_argv(g.propose))
        stop = json.loads((prop / "propose.json").read_text())["stopping"]
        runs = pd.read_csv(prev_csv, dtype={"group": str})
        if not (stop["located"] and g.stop_early):
            new = self._train_manifest(prop, rdir / "runs", r)
            control = rdir / "control"
            if not (control / "summary.json").exists():
                self.pplaw("select", "--landscape", self.landscape, "--tokens", budget, "--out", control,
                           "--seed", self.cfg.seed + 1000 * r,
                           *settings_argv(SelectConfig(method="random", moments=f.moments)))
            self._train(control / "selection.parquet", rdir / "runs" / f"control{r}", self.cfg.seed + 1000 * r)
            control_row = self._run_row(f"control{r}", f"control{r}", rdir / "runs" / f"control{r}", r)
            runs = pd.concat([runs, new, pd.DataFrame([control_row])], ignore_index=True)
        atomic_write(rdir / "runs.csv", lambda tmp: runs.to_csv(tmp, index=False))
        write_text(rdir / "round.json", json.dumps({"round": r, "located": stop["located"], "stopping": stop,
                                                    "n_runs": len(runs)}, indent=1))

    def _fit_argv(self, runs_csv: Path, out: Path, settings) -> list:
        return ["fit", "--runs", runs_csv, "--out", out, "--seed", self.cfg.seed, *settings_argv(settings)]

    def stage_fit(self) -> None:
        self.fit_dir = self.out / "fit"
        if not (self.fit_dir / "fit.json").exists():
            self.pplaw(*self._fit_argv(self.runs_csv, self.fit_dir, self.cfg.fit))

    def stage_select(self) -> None:
        """Every method's subset for every seed (re-drawn where the method is stochastic); a refused
        law-guided method is recorded in `self.refused`, and `dos-point` becomes an alias of
        `dos-posterior` when both select the same subsets."""
        fin = self.cfg.final
        self.selections, self.refused = {}, {}
        for method in fin.methods:
            dirs = {}
            for seed in fin.seeds:
                out = self.out / "select" / method / f"seed{seed}"
                if not (out / "summary.json").exists() and not (out / "refused.json").exists():
                    self._select(method, seed, out)
                if (out / "refused.json").exists():
                    self.refused[method] = out
                    break
                dirs[seed] = out
            if method not in self.refused:
                self.selections[method] = dirs
        if "dos-posterior" in self.selections and "dos-point" in self.selections:
            for alias in aliased_methods(self.out / "select", fin.seeds):
                del self.selections[alias]

    def _select(self, method: str, seed: int, out: Path) -> None:
        fin = self.cfg.final
        argv = ["select", "--landscape", self.landscape, "--tokens", f"{fin.budget:g}", "--out", out,
                "--seed", seed]
        if method.startswith("dos-"):
            settings = replace(fin.select, method="dos", target=method.split("-", 1)[1])
            argv += ["--fit", self.fit_dir]
        else:  # a baseline takes none of DOS's settings
            settings = SelectConfig(method=method, moments=fin.select.moments)
        argv += settings_argv(settings)
        code = self.pplaw(*argv, allow_exit=(2,) if method.startswith("dos-") else ())
        if code == 2 and not (out / "refused.json").exists():
            raise PplawError(f"stage command failed with exit code 2: pplaw {shlex.join(map(str, argv))}")

    def stage_final(self) -> None:
        base_eval = self.out / "final" / "base" / "downstream.json"
        if not base_eval.exists():
            base_eval.parent.mkdir(parents=True, exist_ok=True)
            self.pplaw("eval", "--model", self.base, "--tasks", self.tasks, "--out", base_eval,
                       *settings_argv(self.cfg.eval))
        total = sum(len(dirs) for dirs in self.selections.values())
        for method, dirs in self.selections.items():
            for seed, sel in dirs.items():
                run_dir = self.out / "final" / method / f"seed{seed}"
                done = sum(1 for m in self.selections for k in self.selections[m]
                           if (self.out / "final" / m / f"seed{k}" / "eval.json").exists())
                log.info(f"final run {method} seed {seed} ({done} of {total} runs finished)")
                self._train(sel / "selection.parquet", run_dir, seed)
                if not (run_dir / "downstream.json").exists():
                    self.pplaw("eval", "--model", run_dir / "hf", "--tasks", self.tasks,
                               "--out", run_dir / "downstream.json", *settings_argv(self.cfg.eval))

    def stage_report(self) -> None:
        self.pplaw("report", self.out)
