"""`pplaw run CONFIG.yaml [key=value ...]`: the whole study, one cached stage after another.

Stages exchange files only, and every step of every stage is a `pplaw` subcommand a user could
type, run with OUT as its working directory and paths relative to it, so a study is exactly the
sequence of commands recorded in `OUT/commands.log` (a shell script: replaying it in an empty
directory rebuilds the study from the same inputs):

  0. data       `pplaw data` corpora (optionally written from the Python installation, or a domain
                pool with planted junk: `data.contaminate`), the validation split (the documents
                after the scored ones, unless given), test sets cut to a central window, cloze tasks
  1. base       the base model: a checkpoint, or `pplaw scratch` (tokenizer and config) + `pplaw
                train` of a small Llama from scratch
  2. landscape  `pplaw score` of the domain training split
  3. grid       `pplaw select design` (or `windows`) + one `pplaw train` per subset (evaluated on
                the validation split: the domain test split is read only by stage 6), then
                `grid.rounds` rounds of `pplaw fit` -> `pplaw propose` -> `pplaw train` (plus a
                random control run), stopping when the optimum is located; `pplaw runs` collects
                each round's table -> runs.csv
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
without a change, and `--until STAGE` stops after a stage (the command line: `pplaw_jax.run_cli`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import time
from dataclasses import replace
from pathlib import Path

import yaml

from pplaw_jax.commands import (
    ClozeCommand,
    Command,
    ContaminateCommand,
    CpythonDocsCommand,
    CutCommand,
    DesignCommand,
    EvalCommand,
    FitCommand,
    ProposeCommand,
    ReportCommand,
    RunsCommand,
    ScoreCommand,
    ScratchCommand,
    SelectCommand,
    TrainCommand,
    WindowsCommand,
    argv,
)
from pplaw_jax.config import FitConfig, Method, SelectConfig, StudyConfig, config_to_dict, get_dotted, load_config
from pplaw_jax.errors import PplawError
from pplaw_jax.fileio import discard_temporaries, write_json, write_text
from pplaw_jax.fit.fitdir import FIT_JSON
from pplaw_jax.fit.runs_table import read_runs_table
from pplaw_jax.logs import get_logger
from pplaw_jax.paths import AnyPath, append_text, as_path, is_url, local_path, source
from pplaw_jax.select.io import aliased_methods
from pplaw_jax.stages import FINGERPRINTED, STUDY_STAGES, stage_keys, stages_record, stale_stages, supersede

log = get_logger("run")
COMPILATION_CACHE = ".jax_cache"  # under out_dir (hidden: not a study output)
LOG_STAMP = "#"
CORPORA = ("general_train", "general_test", "domain_train", "domain_valid", "domain_test", "target_eval")
INPUTS_JSON = "inputs.json"  # the content fingerprints of the study's input files (stages.FINGERPRINTED)
VALID_DOCS = 200  # documents of a derived validation split without data.eval_max_docs
LM_EVAL_JSON = "lm_eval.json"  # a final model's lm-evaluation-harness results (final.lm_eval_tasks)


class Study:
    """Runs the stages of one study into `cfg.out_dir`."""

    STAGES = STUDY_STAGES

    def __init__(self, cfg: StudyConfig, force: set[str] | frozenset[str] = frozenset()):
        self.cfg = cfg
        # a study on an object store runs its commands with absolute paths and URLs (there is no
        # working directory in a bucket); a local one from OUT with paths relative to it
        self.remote = is_url(cfg.out_dir)
        self.out: AnyPath = as_path(cfg.out_dir) if self.remote else Path(cfg.out_dir).resolve()
        # why base_model names no files here (e.g. its package is not installed): raised by the
        # base stage, so `--until data` runs on a machine without the model
        self.model_error: PplawError | None = None
        self._check_inputs()  # before anything is written: a typo in a path leaves no study behind
        self.out.mkdir(parents=True, exist_ok=True)
        self._discard_temporaries()
        self._reconcile_config(force)
        # the study's inputs, as the subcommands (run in OUT) see them
        self.data: dict[str, str | AnyPath | None] = {key: self._input(getattr(cfg.data, key)) for key in CORPORA}
        self.labels: AnyPath | None = None  # a contaminated pool's labelled corpus (the oracle's), set by stage_data
        # set by the stages, in order: what the later stages read
        self.tasks: str | AnyPath | None = None
        self.base: str | AnyPath | None = None
        self.landscape = self.out / "landscape"
        self.fit_dir = self.out / "fit"
        self.selections: dict[str, dict[int, AnyPath]] = {}  # method -> seed -> selection directory
        self.refused: dict[str, AnyPath] = {}  # method -> the refusal's directory

    def _input(self, spec: str | None) -> str | None:
        """A path given in the config (relative to where `pplaw run` started) as seen from OUT
        (absolute when OUT is a URL); URLs, ``tfds:`` specs and known model names as given."""
        if spec is None or "://" in spec or spec.startswith("tfds:"):
            return spec
        local = os.path.abspath(spec)
        if not (os.path.exists(local) or os.path.exists(os.path.dirname(local)) and any(c in spec for c in "*?[")):
            return spec  # not a path here (e.g. smollm2-135m-instruct)
        return local if self.remote else os.path.relpath(local, local_path(self.out))

    def _rel(self, path: AnyPath) -> str:
        """`path` (below OUT, and of OUT's kind: local or URL) relative to OUT, for messages."""
        return str(path.relative_to(self.out))  # type: ignore[arg-type]

    def _done(self, marker: AnyPath) -> bool:
        """Whether the command that writes `marker` (its output directory's completion file)
        finished: the marker and, written after it, the directory's ``command.json``. A kill
        between the two leaves the directory complete but unrecorded (and possibly locked); the
        command is then run again, finds its output complete, and records it."""
        from pplaw_jax.cli import COMMAND_JSON

        return marker.exists() and (marker.parent / COMMAND_JSON).exists()

    @staticmethod
    def _words(cmd: Command) -> tuple[list[str], str]:
        """`cmd`'s command-line words, and the shell line of commands.log."""
        words = argv(cmd)
        return words, shlex.join(["pplaw", *words])

    def _arg(self, value) -> str:
        """One command-line word: a path under a local OUT relative to it (a URL as itself),
        anything else as text."""
        if isinstance(value, Path) and not self.remote:
            return os.path.relpath(value, local_path(self.out)) if value.is_absolute() else str(value)
        return str(value)

    # ---------------------------------------------------------------- plumbing
    def _check_inputs(self) -> None:
        """Every corpus the config names must resolve to files (one line naming the key if not), and
        a scratch base model needs a general corpus to pretrain on."""
        from pplaw_jax.data.readers import TFDS_PREFIX, resolve_files

        for key in CORPORA:
            spec = getattr(self.cfg.data, key)
            if spec is not None and not spec.startswith(TFDS_PREFIX):
                try:
                    resolve_files(spec)
                except PplawError as e:
                    raise PplawError(f"config data.{key}: {e}") from None
        d = self.cfg.data
        if self.cfg.base_model is None and d.general_train is None and d.builtin is None:
            raise PplawError("a scratch base model needs data.general_train")

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

    def _reconcile_config(self, force: set[str] | frozenset[str]) -> None:
        """Move aside the outputs this configuration cannot reuse (`pplaw_jax.stages`: a stage whose
        settings or input files changed since the recorded config.yaml and inputs.json, or forced,
        and all downstream of it), then record the configuration and the inputs' fingerprints. The
        moves come first, so a kill in between repeats them."""
        path = self.out / "config.yaml"
        current = {**config_to_dict(self.cfg), "inputs": self._fingerprints()}
        previous = None
        if path.exists():
            try:
                previous = config_to_dict(load_config(path))
            except PplawError as e:
                raise PplawError(
                    f"{path}: the study's recorded configuration no longer loads ({e}); use a new out_dir"
                ) from None
            recorded = self.out / INPUTS_JSON
            # a study recorded before fingerprints were kept: unknown is not a difference
            previous["inputs"] = json.loads(recorded.read_text()) if recorded.exists() else current["inputs"]
            if self.model_error is not None:  # not resolvable now: unknown is not a difference either
                current["inputs"]["base_model"] = previous["inputs"].get("base_model")
        old_keys = stage_keys(previous if previous is not None else current)
        for stage in stale_stages(previous, current, force):
            moved = supersede(self.out, stage, old_keys[stage])
            if moved is not None:
                log.info(
                    f"stage {stage}: inputs changed{' (forced)' if stage in force else ''}; "
                    f"previous outputs moved to {self._rel(moved)}"
                )
        write_text(path, yaml.safe_dump({k: v for k, v in current.items() if k != "inputs"}, sort_keys=True))
        write_json(self.out / INPUTS_JSON, current["inputs"])
        write_json(self.out / "stages.json", stages_record(current))

    def _fingerprints(self) -> dict[str, str | None]:
        """Content fingerprints of the input files the configuration names (`stages.FINGERPRINTED`),
        as given (relative to where `pplaw run` started); None where nothing is named or the
        content cannot be known (a TFDS spec, a stream, a model name that names no files)."""
        from pplaw_jax.data.readers import corpus_fingerprint
        from pplaw_jax.fileio import content_fingerprint
        from pplaw_jax.models.loading import model_fingerprint
        from pplaw_jax.paths import as_path

        tree = config_to_dict(self.cfg)
        out: dict[str, str | None] = {}
        for key in FINGERPRINTED:
            spec = get_dotted(tree, key)
            if spec is None:
                out[key] = None
            elif key == "base_model":
                try:
                    out[key] = model_fingerprint(spec)
                except PplawError as e:
                    self.model_error, out[key] = e, None
            elif key == "final.lm_eval_include":
                out[key] = content_fingerprint(sorted(p for p in as_path(spec).rglob("*") if p.is_file()))
            else:
                out[key] = corpus_fingerprint(spec) if key.startswith("data.") else content_fingerprint([spec])
        return out

    def pplaw(self, cmd: Command, allow_exit: tuple[int, ...] = ()) -> int:
        """Run one `pplaw` subcommand in-process, logging the equivalent shell command; an exit code
        other than 0 (and `allow_exit`) fails the study."""
        from pplaw_jax.cli import main

        words, line = self._words(cmd)
        entry = f"{line}  {LOG_STAMP} {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        if self.remote:  # no appends on an object store: the log object is rewritten
            append_text(self.out / "commands.log", entry)
        else:
            with open(local_path(self.out) / "commands.log", "a") as f:
                f.write(entry)
        log.info(f">>> {line}")
        # what commands.log says: run from OUT (a URL study's commands name absolute paths and URLs)
        with contextlib.nullcontext() if self.remote else contextlib.chdir(local_path(self.out)):
            code = main(words)
        if code != 0 and code not in allow_exit:
            raise PplawError(f"stage command failed with exit code {code}: {line}")
        return code

    def run(self, stop_after: str | None = None) -> None:
        if stop_after is not None and stop_after not in self.STAGES:
            raise PplawError(f"stop_after must be one of {', '.join(self.STAGES)}, got {stop_after!r}")
        for i, stage in enumerate(self.STAGES, 1):
            log.info(f"=== stage {stage} ({i}/{len(self.STAGES)})")
            getattr(self, f"stage_{stage}")()
            if stage == stop_after:
                return

    # ---------------------------------------------------------------- stages
    def stage_data(self) -> None:
        d, w = self.cfg.data, self._arg
        data = self.out / "data"
        fields = dict(text_field=d.text_field, id_field=d.id_field)
        if d.builtin == "cpython-docs":
            from pplaw_jax.data.cpython_docs import MANIFEST

            if not (data / MANIFEST).exists():
                self.pplaw(CpythonDocsCommand(out=w(data)))
            self.data.update(
                {
                    key: data / f"{key}.jsonl"
                    for key in ("general_train", "general_test", "domain_train", "domain_valid", "domain_test")
                }
            )
            fields = dict(text_field="text", id_field="id")  # written as {"id", "text"}
        missing = [k for k in ("domain_train", "domain_test") if not self.data[k]]
        if missing:
            raise PplawError(f"config data.{missing[0]} is required (or data.builtin)")
        clean_train = self.data["domain_train"]
        if d.contaminate.fraction is not None:
            self.labels = self.data["domain_train"] = self._contaminate(data, **fields)
        given = [k for k in ("domain_valid", "domain_test", "general_test", "target_eval") if self.data[k]]
        if not self.data["domain_valid"]:  # the documents after the scored ones: disjoint from every subset
            if not d.domain_max_docs:
                raise PplawError(
                    "config data.domain_valid is required unless data.domain_max_docs leaves "
                    "documents of data.domain_train out of the landscape (the validation split "
                    "is then the documents after them)"
                )
            valid = data / "domain_valid.jsonl"
            if not valid.exists():
                self.pplaw(
                    CutCommand(
                        data=w(clean_train),
                        out=w(valid),
                        skip_docs=d.domain_max_docs,
                        max_docs=d.eval_max_docs or VALID_DOCS,
                        chars=d.eval_doc_chars or None,
                        **fields,
                    )
                )
            self.data["domain_valid"] = valid
        for key in given:  # book-length test documents would make every evaluation slow
            skip = d.test_skip_docs if key == "domain_test" else 0
            if not (d.eval_doc_chars or skip):
                continue
            name = "_".join(
                [key, *([f"cut{d.eval_doc_chars}"] if d.eval_doc_chars else []), *([f"skip{skip}"] if skip else [])]
            )
            cut = data / f"{name}.jsonl"
            if not cut.exists():
                self.pplaw(
                    CutCommand(
                        data=w(self.data[key]),
                        out=w(cut),
                        chars=d.eval_doc_chars or None,
                        skip_docs=skip,
                        max_docs=d.eval_max_docs or None,
                        **fields,
                    )
                )
            self.data[key] = cut
        self.tasks = self._input(self.cfg.final.tasks)
        if self.tasks is None:
            self.tasks = data / "domain_cloze.jsonl"
            if not self.tasks.exists():
                self.pplaw(
                    ClozeCommand(
                        data=w(self.data["domain_test"]), out=w(self.tasks), n=200, seed=self.cfg.seed, **fields
                    )
                )

    def _contaminate(self, data: AnyPath, text_field: str, id_field: str) -> AnyPath:
        """The domain pool with planted junk (`pplaw data contaminate`): the first
        ``data.domain_max_docs`` clean documents and the junk, each labelled."""
        d, c, w = self.cfg.data, self.cfg.data.contaminate, self._arg
        assert c.fraction is not None  # called only for a contaminated pool
        out = data / f"domain_train_junk{100 * c.fraction:g}.jsonl"
        if not out.with_name(out.stem + ".manifest.json").exists():
            self.pplaw(
                ContaminateCommand(
                    data=w(self.data["domain_train"]),
                    out=w(out),
                    text_field=text_field,
                    id_field=id_field,
                    fraction=c.fraction,
                    low_share=c.low_share,
                    kinds=",".join(c.kinds),
                    general=w(self.data["general_train"]) if "general" in c.kinds else None,
                    max_docs=d.domain_max_docs or None,
                    seed=c.seed,
                )
            )
        return out

    def stage_base(self) -> None:
        if self.model_error is not None:
            raise self.model_error
        if self.cfg.base_model is not None:
            self.base = self._input(self.cfg.base_model)
            return
        from pplaw_jax.train.scratch_cli import INIT_CONFIG, TOKENIZER

        s, d, w = self.cfg.scratch, self.cfg.data, self._arg
        base = self.out / "base"
        fields = dict(
            s.hf_config,
            max_position_embeddings=max(s.train.seq_len, self.cfg.landscape.seq_len, self.cfg.train.seq_len),
        )
        if not (base / INIT_CONFIG).exists():
            self.pplaw(
                ScratchCommand(
                    data=w(self.data["general_train"]),
                    vocab_size=s.vocab_size,
                    out=w(base),
                    max_docs=s.tokenizer_max_docs or None,
                    text_field=d.text_field,
                    id_field=d.id_field,
                    fields=[f"{k}={json.dumps(v)}" for k, v in fields.items()],
                )
            )
        run_dir = base / "pretrain"
        self.base = run_dir / "hf"
        if self._done(run_dir / "eval.json"):
            return
        self.pplaw(
            TrainCommand(
                model=f"scratch:{w(base / INIT_CONFIG)}",
                tokenizer=w(base / TOKENIZER),
                data=w(self.data["general_train"]),
                out=w(run_dir),
                steps=s.steps,
                seed=self.cfg.seed,
                **self._eval_sets(None),
                text_field=d.text_field,
                id_field=d.id_field,
                max_docs=s.max_docs or None,
                cfg=s.train,
            )
        )

    def _eval_sets(self, split: str | None) -> dict:
        """`pplaw train`'s evaluation sets of a run: the domain `split` (``domain_valid`` for
        law-fitting runs, ``domain_test`` for the final comparison, None for the base model), the
        general and the target sets."""
        target = self.data["target_eval"] if self.data["target_eval"] and split is not None else None
        return dict(
            eval_data=None if split is None else self._arg(self.data[split]),
            general_eval_data=self._arg(self.data["general_test"]) if self.data["general_test"] else None,
            target_eval_data=None if target is None else self._arg(target),
            eval_max_docs=self.cfg.data.eval_max_docs or None,
        )

    def stage_landscape(self) -> None:
        if self._done(self.landscape / "summary.json"):
            return
        cut = self.cfg.data.domain_max_docs and self.labels is None  # a contaminated pool is already cut
        self.pplaw(
            ScoreCommand(
                model=self._arg(self.base),
                data=self._arg(self.data["domain_train"]),
                out=self._arg(self.landscape),
                text_field=self.cfg.data.text_field,
                id_field=self.cfg.data.id_field,
                max_docs=self.cfg.data.domain_max_docs if cut else None,
                cfg=self.cfg.landscape,
            )
        )

    def _train(self, selection: AnyPath, out: AnyPath, seed: int, split: str = "domain_valid") -> None:
        """One CPT run, evaluated on the domain `split` (the validation split, but for the final
        comparison's runs)."""
        if self._done(out / "eval.json"):
            return
        self.pplaw(
            TrainCommand(
                model=self._arg(self.base),
                data=self._arg(self.data["domain_train"]),
                selection=self._arg(selection),
                out=self._arg(out),
                seed=seed,
                **self._eval_sets(split),
                text_field=self.cfg.data.text_field,
                id_field=self.cfg.data.id_field,
                cfg=self.cfg.train,
            )
        )

    def stage_grid(self) -> None:
        g, seed, w = self.cfg.grid, self.cfg.seed, self._arg
        grid = self.out / "grid"
        self.runs_csv = grid / "runs.csv"
        if self.runs_csv.exists():
            return
        sel_dir = grid / "selections"
        if not self._done(sel_dir / f"{g.kind}.json"):
            if g.kind == "design":
                self.pplaw(DesignCommand(landscape=w(self.landscape), out=w(sel_dir), seed=seed, cfg=g.design))
            else:
                self.pplaw(WindowsCommand(landscape=w(self.landscape), out=w(sel_dir), seed=seed, cfg=g.windows))
        round_csv = grid / "round0" / "runs.csv"
        if not round_csv.exists():
            self._train_manifest(sel_dir, grid / "runs")
            self.pplaw(
                RunsCommand(out=w(round_csv), metric=g.metric, round=0, manifest=w(sel_dir), runs_dir=w(grid / "runs"))
            )
        for r in range(1, g.rounds + 1):
            done = grid / f"round{r}" / "round.json"
            if not done.exists():
                self._sequential_round(r, round_csv)
            round_csv = grid / f"round{r}" / "runs.csv"
            if g.stop_early and json.loads(done.read_text())["located"]:
                break
        self.pplaw(RunsCommand(out=w(self.runs_csv), include=w(round_csv)))

    def _train_manifest(self, sel_dir: AnyPath, runs_dir: AnyPath) -> None:
        """Train every subset of a manifest (design, windows or proposals) into ``runs_dir/<name>``."""
        import pandas as pd

        manifest = pd.read_csv(source(sel_dir / "manifest.csv"), dtype={"group": str})
        if manifest.empty:
            raise PplawError(f"no subsets in {sel_dir / 'manifest.csv'}")
        started, trained = time.monotonic(), 0  # the estimate counts only runs trained in this session
        for i, r in enumerate(manifest.itertuples(), 1):
            elapsed = time.monotonic() - started
            left = f", about {elapsed / trained * (len(manifest) - i + 1) / 60:.1f} min left" if trained else ""
            log.info(
                f"run {i}/{len(manifest)} of {self._rel(sel_dir)}: {r.name} ({elapsed / 60:.1f} min elapsed{left})"
            )
            finished = self._done(runs_dir / r.name / "eval.json")
            self._train(sel_dir / r.name / "selection.parquet", runs_dir / r.name, self.cfg.seed + int(r.seed))
            trained += not finished

    def _sequential_round(self, r: int, prev_csv: AnyPath) -> None:
        """Round `r`: fit the runs so far, propose the next runs and, unless the optimum is located
        (and ``grid.stop_early``), train them and a re-drawn random control at the final budget;
        `round.json` marks it done."""
        g, f, w = self.cfg.grid, self.cfg.fit, self._arg
        rdir = self.out / "grid" / f"round{r}"
        fit_dir = rdir / "fit"
        if not self._done(fit_dir / FIT_JSON):
            self.pplaw(self._fit(prev_csv, fit_dir, replace(f, compare=False, allow_unconverged=True)))
        prop = rdir / "proposals"
        budget = f"{self.cfg.final.budget:g}"
        if not self._done(prop / "propose.json"):
            self.pplaw(
                ProposeCommand(
                    fit=w(fit_dir),
                    landscape=w(self.landscape),
                    tokens=budget,
                    out=w(prop),
                    prefix=f"r{r}q",
                    seed=self.cfg.seed + 1000 * r,
                    cfg=g.propose,
                )
            )
        stop = json.loads((prop / "propose.json").read_text())["stopping"]
        collect = RunsCommand(out=w(rdir / "runs.csv"), metric=g.metric, round=r, include=w(prev_csv))
        if not (stop["located"] and g.stop_early):
            self._train_manifest(prop, rdir / "runs")
            control = rdir / "control"
            if not self._done(control / "summary.json"):
                self.pplaw(
                    SelectCommand(
                        landscape=w(self.landscape),
                        out=w(control),
                        seed=self.cfg.seed + 1000 * r,
                        tokens=budget,
                        cfg=SelectConfig(method="random", moments=f.moments),
                    )
                )
            self._train(control / "selection.parquet", rdir / "runs" / f"control{r}", self.cfg.seed + 1000 * r)
            # every random control is one design point (group `random`): replicates for the pure error
            collect = replace(
                collect, manifest=w(prop), runs_dir=w(rdir / "runs"), run=[f"random={w(rdir / 'runs' / f'control{r}')}"]
            )
        self.pplaw(collect)
        n_runs = len(read_runs_table(rdir / "runs.csv"))
        write_text(
            rdir / "round.json",
            json.dumps({"round": r, "located": stop["located"], "stopping": stop, "n_runs": n_runs}, indent=1),
        )

    def _fit(self, runs_csv: AnyPath, out: AnyPath, settings: FitConfig) -> FitCommand:
        return FitCommand(runs=self._arg(runs_csv), out=self._arg(out), seed=self.cfg.seed, cfg=settings)

    def stage_fit(self) -> None:
        if not self._done(self.fit_dir / FIT_JSON):
            self.pplaw(self._fit(self.runs_csv, self.fit_dir, self.cfg.fit))

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
                if not self._done(out / "summary.json") and not (out / "refused.json").exists():
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

    def _select(self, method: Method, seed: int, out: AnyPath) -> None:
        fin = self.cfg.final
        cmd = SelectCommand(
            landscape=self._arg(self.landscape), out=self._arg(out), seed=seed, tokens=f"{fin.budget:g}"
        )
        if method == "dos-posterior" or method == "dos-point":
            dos = replace(fin.select, method="dos", target="posterior" if method == "dos-posterior" else "point")
            cmd = replace(cmd, fit=self._arg(self.fit_dir), cfg=dos)
        else:  # a baseline takes none of DOS's settings
            cmd = replace(cmd, cfg=SelectConfig(method=method, moments=fin.select.moments))
            if method == "oracle":  # the planted labels, which no other method sees
                assert self.labels is not None  # the config allows the oracle only for a contaminated pool
                cmd = replace(cmd, labels=self._arg(self.labels), id_field=self.cfg.data.id_field)
        code = self.pplaw(cmd, allow_exit=(2,) if method.startswith("dos-") else ())
        if code == 2 and not (out / "refused.json").exists():
            raise PplawError(f"stage command failed with exit code 2: {self._words(cmd)[1]}")

    def _downstream(self, model, run_dir: AnyPath) -> None:
        """`pplaw eval` of one model: the study's tasks, and its lm-eval tasks if it names any."""
        fin, w = self.cfg.final, self._arg
        if not (run_dir / "downstream.json").exists():
            run_dir.mkdir(parents=True, exist_ok=True)
            self.pplaw(
                EvalCommand(model=w(model), tasks=w(self.tasks), out=w(run_dir / "downstream.json"), cfg=self.cfg.eval)
            )
        if fin.lm_eval_tasks and not (run_dir / LM_EVAL_JSON).exists():
            include = self._input(fin.lm_eval_include)
            self.pplaw(
                EvalCommand(
                    model=w(model),
                    lm_eval_tasks=fin.lm_eval_tasks,
                    lm_eval_include=include,
                    out=w(run_dir / LM_EVAL_JSON),
                    cfg=self.cfg.eval,
                )
            )

    def stage_final(self) -> None:
        self._downstream(self.base, self.out / "final" / "base")
        total = sum(len(dirs) for dirs in self.selections.values())
        for method, dirs in self.selections.items():
            for seed, sel in dirs.items():
                run_dir = self.out / "final" / method / f"seed{seed}"
                done = sum(
                    1
                    for m in self.selections
                    for k in self.selections[m]
                    if (self.out / "final" / m / f"seed{k}" / "eval.json").exists()
                )
                log.info(f"final run {method} seed {seed} ({done} of {total} runs finished)")
                self._train(sel / "selection.parquet", run_dir, seed, split="domain_test")
                self._downstream(run_dir / "hf", run_dir)

    def stage_report(self) -> None:
        self.pplaw(ReportCommand(study=self._arg(self.out)))
