"""Typed configuration: one dataclass of settings per stage, behind both the YAML study file and
each subcommand's flags.

A stage's *settings* (sequence length, learning rate, NUTS warmup, ...) are fields of its config
class: `ScoreConfig` (`pplaw score`), `TrainConfig` (`pplaw train`), `FitConfig` (`pplaw fit`),
`SelectConfig`, `DesignConfig`, `WindowsConfig` (`pplaw select`, `select design`, `select windows`),
`ProposeConfig` (`pplaw propose`) and `EvalConfig` (`pplaw eval`). A command's *arguments* — its
inputs, outputs, seed and run length — are not settings: they are plain flags of the command, and a
study derives them from its layout. Each default is written once, here.

The same classes are composed into `StudyConfig` (`pplaw run CONFIG.yaml`), so `landscape:` in a
study file is a `ScoreConfig`, `train:` a `TrainConfig`, and so on. Flags are generated from the
fields by simple-parsing (argparse underneath: the subcommands keep argparse's help and error
format, and `--seq-len` style names); `settings_argv` turns a config back into those flags. A
subcommand's arguments and its settings together are its command class (`pplaw_jax.commands`),
which is how `pplaw run` calls the subcommands, so a study's `commands.log` states every setting.

Values are checked when a config is built, from YAML or from flags: types (a whole number for an
int: `1e3` is one, `1.7` is not), enums (``Literal`` fields), ranges (field metadata) and unknown
keys, each error naming the key (``train.lr``) or flag (``--lr``). A study file may inherit from
another (``base: quickstart.yaml``, relative to the file; the child's keys override, section by
section).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import yaml

from pplaw_jax.errors import PplawError
from pplaw_jax.paths import AnyPath, PathSpec, as_path

DEFAULT_MESH = "data=-1,fsdp=1,tensor=1"
Dtype = Literal["float32", "bfloat16"]
Moments = Literal["ppl", "logppl"]
Selector = Literal["tilted", "bands"]
Law = Literal["auto", "ppl", "data", "mu", "nointer", "quad", "surface"]
AUTO = "auto"  # fit.law: choose the law by lack of fit and held-out error (pplaw_jax.law.choice)
MOMENTS_DEFAULT = "logppl"  # chunk mean-NLL moments: what every committed study uses (README: the two kinds)
SELECTOR_DEFAULT = "tilted"
MAX_BOUNDARY_FRACTION = 0.2
LACK_OF_FIT_ALPHA = 0.05  # a law whose lack-of-fit test has p below this is not used to select
BUDGETS_DEFAULT = (1e4, 4e4, 1.6e5)  # a design's budgets: spanning 16x


def setting(
    default=dataclasses.MISSING,
    *,
    help: str,
    factory=None,
    lo=None,
    hi=None,
    lo_open: bool = False,
    hi_open: bool = False,
    **argparse_kwargs,
):
    """A config field: its help text, its allowed range (``[lo, hi]``, either end open; a list is
    checked item by item) and any extra argparse arguments of its flag."""
    from simple_parsing import field

    kwargs = dict(default_factory=factory) if factory is not None else dict(default=default)
    return field(help=help, metadata={"range": (lo, hi, lo_open, hi_open)}, **kwargs, **argparse_kwargs)


def switch(default: bool, *, help: str):
    """A boolean setting: ``--name`` / ``--no-name`` on the command line, true/false in YAML."""
    return setting(default, help=help, negative_prefix="--no-")


# ---------------------------------------------------------------------- stage settings
@dataclass
class ScoreConfig:
    """`pplaw score`: how the frozen model scores the corpus."""

    seq_len: int = setting(1024, help="tokens per chunk, start token included", lo=2)
    batch_size: int | None = setting(
        None,
        lo=1,
        help="chunks per step over all hosts; a multiple of the data x fsdp mesh size "
        "(default: 8 per host, rounded up to one)",
    )
    dtype: Dtype = setting("float32", help="compute dtype")
    mesh: str = setting(
        DEFAULT_MESH,
        help="device mesh over all hosts' devices (axes data, fsdp, "
        "tensor); each host scores its own documents on its "
        "share of the data axis",
    )
    docs_per_part: int = setting(1000, lo=1, help="documents per resumable output part")
    scan_layers: bool = switch(False, help="stack the decoder layers under nnx.scan (compile time flat in depth)")


@dataclass
class TrainConfig:
    """`pplaw train`: the CPT run's optimisation and bookkeeping."""

    seq_len: int = setting(1024, lo=2, help="tokens per sequence, start token included")
    batch_size: int = setting(8, lo=1, help="global batch size (sequences per step)")
    lr: float = setting(1e-4, lo=0, lo_open=True, help="peak learning rate")
    min_lr_ratio: float = setting(0.1, lo=0, hi=1, help="final learning rate as a fraction of --lr")
    warmup: float = setting(0.05, lo=0, help="warmup: a fraction of the steps if < 1, else steps")
    schedule: Literal["cosine", "linear", "constant"] = setting("cosine", help="learning-rate decay")
    weight_decay: float = setting(0.1, lo=0, help="AdamW decoupled weight decay (matrices only)")
    clip_norm: float = setting(1.0, lo=0, help="global gradient-norm clip (0: none)")
    dtype: Dtype = setting("float32", help="compute dtype (weights and optimizer state stay float32)")
    mesh: str = setting(DEFAULT_MESH, help="device mesh over all hosts' devices (axes data, fsdp, tensor)")
    remat: Literal["none", "full", "dots_saveable"] = setting(
        "none",
        help="what a layer keeps for the backward pass: everything (none), its input only (full), "
        "its matmul outputs (dots_saveable)",
    )
    scan_layers: bool = switch(
        False,
        help="stack the decoder layers under nnx.scan (compile time flat in depth; checkpoints are layout-specific)",
    )
    eval_every: int = setting(0, lo=0, help="evaluate every K steps (0: only at the end)")
    eval_batch_size: int | None = setting(None, lo=1, help="sequences per eval batch (default --batch-size)")
    save_every: int = setting(100, lo=1, help="checkpoint every K steps (and at the end)")
    log_every: int = setting(
        10,
        lo=1,
        help="fetch the step metrics to the host every K steps (one device "
        "sync; every step still gets its metrics.jsonl row)",
    )
    keep: int = setting(2, lo=1, help="checkpoints to keep")


@dataclass
class FitConfig:
    """`pplaw fit`: the law, its moments, the point and Bayesian fits and their checks."""

    law: Law = setting(
        AUTO,
        help="law: auto (the simplest law that passes the lack-of-fit test and predicts "
        "left-out design points as well as the best), or one of ppl (the paper's), "
        "data, mu, nointer, quad, surface",
    )
    moments: Moments = setting(
        MOMENTS_DEFAULT,
        help="mu and sigma of the runs: ppl = chunk-perplexity "
        "mean/std (the paper's), logppl = chunk mean-NLL mean/std (better conditioned)",
    )
    method: Literal["point", "bayes", "both"] = setting(
        "both", help="point: Huber fit + bootstrap; bayes: NUTS started at the point fit; both"
    )
    bootstrap: int = setting(200, lo=0, help="group-bootstrap refits of the point fit (intervals, interior check)")
    starts: int = setting(16, lo=0, help="random starts added to the OLS grid starts")
    folds: int = setting(
        0, lo=0, help="held-out comparison: 0 leaves one run group out at a time; k >= 2: k folds of run groups"
    )
    min_runs_per_param: float = setting(
        2.0,
        lo=1,
        help="a law is fitted only with at least this many runs per "
        "parameter (fewer: the law is skipped by --law auto, refused when given)",
    )
    outlier_share: float = setting(
        0.0,
        lo=0,
        hi=0.5,
        help="lack-of-fit test: at most this share of the runs (unreplicated, "
        "beyond 5 pure-error sds) may be set aside as outliers, and are named "
        "(0: the classical test)",
    )
    trust_margin: float = setting(
        0.1,
        lo=0,
        help="the supported region: the runs' convex hull in scaled "
        "(log mu, log sigma) widened by this distance; the optimum is searched inside it",
    )
    tokens_ref: float | None = setting(
        None,
        lo=0,
        lo_open=True,
        help="D at which the surface and optimum loss are shown (default: median tokens of the runs)",
    )
    level: float = setting(0.9, lo=0, hi=1, lo_open=True, hi_open=True, help="credible level of intervals")
    chains: int = setting(4, lo=2, help="NUTS chains")
    warmup: int = setting(1000, lo=1, help="NUTS warmup steps per chain")
    samples: int = setting(1000, lo=4, help="NUTS samples per chain")
    likelihood: Literal["normal", "student"] = setting(
        "student",
        help="observation model on log-loss: student (default: robust to outlier runs, like the "
        "Huber point fit) or normal",
    )
    student_df: float = setting(4.0, lo=0, lo_open=True, help="Student-t degrees of freedom")
    target_accept: float = setting(
        0.9,
        lo=0,
        hi=1,
        lo_open=True,
        hi_open=True,
        help="NUTS target acceptance; raise it when the fit reports divergences",
    )
    prior: list[str] = setting(
        factory=list,
        action="append",
        nargs=None,
        type=str,
        metavar="NAME=VALUE",
        help="override a prior constant (log_E_loc, log_E_scale, intercept_loc, "
        "intercept_scale, coef_scale, interaction_scale, noise_scale); repeatable",
    )
    max_rhat: float = setting(1.01, lo=1, help="convergence: max r_hat")
    min_ess: float = setting(100.0, lo=0, help="convergence: min bulk ESS per chain")
    max_divergences: int = setting(0, lo=0, help="convergence: max divergent transitions")
    allow_unconverged: bool = switch(False, help="keep a Bayesian fit that fails the convergence checks")
    plots: bool = switch(True, help="write the PNG figures")
    compare: bool = switch(
        True, help="validate against the rival laws (off for the intermediate fits of a sequential design)"
    )


@dataclass
class SelectConfig:
    """`pplaw select`: one selection at a token budget."""

    method: Literal["dos", "random", "low", "high", "mid", "band", "oracle", "full"] = setting(
        "dos",
        help="selection method (band: random within the middle 80%% of chunk perplexity, the peers' "
        "filter; oracle: random among documents labelled clean, needs --labels)",
    )
    moments: Moments | None = setting(
        None, help=f"mu and sigma of a subset (default: the fit's with --fit, else {MOMENTS_DEFAULT})"
    )
    selector: Selector | None = setting(
        None,
        help="how a (mu, sigma) target becomes a subset: tilted "
        "(perplexity-tilted random sampling) or bands (two "
        f"bands of ppl-sorted chunks refined by swaps); "
        f"default {SELECTOR_DEFAULT}",
    )
    target: Literal["posterior", "point"] | None = setting(
        None,
        help="DOS target from the fit: least posterior expected loss (default when posterior.nc "
        "exists) or least point-estimate loss",
    )
    allow_boundary: bool = switch(
        False,
        help="select even when the fit's optimum sits on the edge of the "
        "supported region (default: refuse with exit 2)",
    )
    allow_lack_of_fit: bool = switch(
        False, help="select with a law that failed its lack-of-fit test (default: refuse with exit 2)"
    )
    max_boundary_fraction: float | None = setting(
        None,
        lo=0,
        hi=1,
        help=f"the interior check refuses when more than this share of posterior (or "
        f"bootstrap) draws have their argmin on the edge (default {MAX_BOUNDARY_FRACTION})",
    )
    trust_margin: float | None = setting(
        None, lo=0, help="widen the runs' hull by this distance instead of the fit's margin"
    )


@dataclass
class DesignConfig:
    """`pplaw select design`: the space-filling 2-D design of law-fitting subsets."""

    n: int = setting(24, lo=2, help="number of runs, centre replicates included")
    centre: int = setting(3, lo=0, help="replicated runs at the region's centre")
    budgets: list[float] = setting(
        factory=lambda: list(BUDGETS_DEFAULT), lo=0, lo_open=True, help="token budgets, spanning at least 16x"
    )
    selector: Selector = setting(SELECTOR_DEFAULT, help="how each design target becomes a subset")
    moments: Moments = setting(MOMENTS_DEFAULT, help="the (mu, sigma) the design spreads over")


@dataclass
class WindowsConfig:
    """`pplaw select windows`: the paper's grid of perplexity-quantile windows x budgets."""

    budgets: list[float] = setting(factory=lambda: [1e5, 3e5, 1e6], lo=0, lo_open=True, help="token budgets")
    windows: list[str] = setting(
        factory=lambda: [
            "0-0.2",
            "0.2-0.4",
            "0.4-0.6",
            "0.6-0.8",
            "0.8-1",
            "0-0.5",
            "0.25-0.75",
            "0.5-1",
            "0-0.8",
            "0.2-1",
            "0-1",
        ],
        metavar="LO-HI",
        help="ppl quantile windows, e.g. 0-0.2 0.2-0.4",
    )
    moments: Moments = setting(MOMENTS_DEFAULT, help="the moments the manifest reports as mu, sigma")


@dataclass
class ProposeConfig:
    """`pplaw propose`: the next law-fitting runs and the stopping rule."""

    n: int = setting(4, lo=1, help="number of runs to propose (duplicates merged)")
    acquisition: Literal["thompson", "uncertainty"] = setting(
        "thompson",
        help="thompson: argmins of random posterior draws (locate the optimum); "
        "uncertainty: largest predictive sd (a better global fit)",
    )
    trust_margin: float = setting(0.25, lo=0, help="exploration margin around the runs' hull")
    selector: Selector = setting(SELECTOR_DEFAULT, help="how each proposal becomes a subset")
    radius: float = setting(0.25, lo=0, lo_open=True, help="stopping rule: distance in landscape sd")
    stop_probability: float = setting(
        0.9, lo=0, hi=1, lo_open=True, help="stopping rule: probability of the argmin within --radius"
    )


@dataclass
class EvalConfig:
    """`pplaw eval`: multiple-choice scoring."""

    batch_size: int = setting(8, lo=1, help="sequences per forward pass")
    max_examples: int | None = setting(None, lo=1, help="evaluate the first N tasks (per lm-eval task) only")
    max_length: int | None = setting(None, lo=2, help="longest sequence (default: the model's context, at most 2048)")
    dtype: Dtype = setting("float32", help="compute dtype")
    mesh: str = setting(DEFAULT_MESH, help="device mesh (axes data, fsdp, tensor)")


# ---------------------------------------------------------------------- the study
@dataclass
class ScratchConfig:
    """A small Llama-style base model pretrained from scratch on the general corpus."""

    hf_config: dict = setting(factory=dict, help="HF config.json fields (LlamaConfig)")
    vocab_size: int = setting(2048, lo=2, help="BPE tokenizer trained on the general corpus")
    tokenizer_max_docs: int | None = setting(None, lo=1, help="train the tokenizer on the first N documents")
    max_docs: int | None = setting(None, lo=1, help="pretrain on the first N general documents")
    steps: int = setting(300, lo=1, help="pretraining steps")
    train: TrainConfig = setting(factory=TrainConfig, help="the pretraining run's settings")


@dataclass
class ContaminateConfig:
    """Planted junk of known kinds and fraction in the domain pool (`pplaw data contaminate`): the
    positive control of data selection (``fraction: 0`` is the negative control, the same corpus
    clean, with the labels)."""

    fraction: float | None = setting(
        None, lo=0, hi=1, hi_open=True, help="junk share of the pool's documents (None: no contamination)"
    )
    low_share: float = setting(0.5, lo=0, hi=1, help="share of the junk that is low-perplexity")
    kinds: list[Literal["general", "boilerplate", "garbled", "shuffled", "table"]] = setting(
        factory=lambda: ["general", "boilerplate", "garbled", "shuffled", "table"],
        help="junk kinds: low general, boilerplate; high garbled, shuffled, table",
    )
    seed: int = setting(0, help="seed of the junk and of the documents' order")


@dataclass
class DataConfig:
    """Where the corpora live. `builtin: cpython-docs` writes them from the Python installation.

    Three domain splits with three jobs: `domain_train` is the pool the landscape scores and the
    subsets come from; `domain_valid` is what every law-fitting run is evaluated on (the loss the law
    is fitted to, the rounds' fits, every threshold); `domain_test` is read only by the final
    comparison, so the verdict is never read on the split that tuned the method. Without
    `domain_valid`, it is the documents after the first `domain_max_docs` of `domain_train`
    (disjoint from every subset), `eval_max_docs` of them (default 200).
    """

    builtin: Literal["cpython-docs"] | None = setting(None, help="a corpus written here")
    general_train: str | None = setting(None, help="general corpus (scratch pretraining, tokenizer)")
    general_test: str | None = setting(None, help="general test corpus (forgetting)")
    domain_train: str | None = setting(None, help="the domain pool the landscape scores")
    domain_valid: str | None = setting(
        None,
        help="domain validation corpus: the law-fitting runs' loss "
        "(default: documents after domain_max_docs of domain_train)",
    )
    domain_test: str | None = setting(None, help="domain test corpus: read only by the final comparison")
    target_eval: str | None = setting(None, help="an evaluation corpus outside the training pool")
    text_field: str = setting("text", help="JSON field / Parquet column with the text")
    id_field: str = setting("id", help="document id field")
    domain_max_docs: int | None = setting(None, lo=1, help="score the first N domain documents")
    eval_max_docs: int | None = setting(None, lo=1, help="evaluate on the first N documents of each set")
    eval_doc_chars: int | None = setting(None, lo=1, help="cut each test document to its central N chars")
    test_skip_docs: int = setting(
        0,
        lo=0,
        help="skip the first N documents of domain_test: a fresh verdict split "
        "for a confirmation study whose method was revised after an earlier "
        "study read the first ones",
    )
    contaminate: ContaminateConfig = setting(factory=ContaminateConfig, help="planted junk (positive control)")


@dataclass
class GridConfig:
    """The law-fitting CPT runs: a space-filling 2-D design (``kind: design``) or perplexity windows
    (``windows``), then up to `rounds` rounds of fit -> `pplaw propose` (`propose.n` runs at the
    final budget) -> train, plus one re-drawn random subset at the final budget as a control,
    stopping early when the proposal's stopping rule says the optimum is located (``stop_early:
    false`` spends every round, for a fixed run budget). `metric` is the eval.json figure the law
    is fitted on (``target_loss`` needs ``data.target_eval``). The design's selector also realises
    the proposals and the DOS selections, and ``fit.moments`` is the moments of every stage, so
    ``design.moments``, ``windows.moments`` and ``propose.selector`` are not set in a study.
    """

    kind: Literal["design", "windows"] = setting("design", help="the initial runs")
    design: DesignConfig = setting(factory=DesignConfig, help="kind: design")
    windows: WindowsConfig = setting(factory=WindowsConfig, help="kind: windows")
    rounds: int = setting(0, lo=0, help="rounds of sequential design after the initial runs")
    propose: ProposeConfig = setting(factory=ProposeConfig, help="each round's proposals")
    stop_early: bool = setting(True, help="stop the rounds once the optimum is located")
    metric: Literal["domain_loss", "target_loss"] = setting("domain_loss", help="the loss the law is fitted on")


Method = Literal["dos-posterior", "dos-point", "random", "low", "high", "mid", "band", "oracle", "full"]
METHODS: tuple[str, ...] = typing.get_args(Method)


@dataclass
class FinalConfig:
    """The final comparison: each selection method at one budget, several seeds.

    The law-guided methods (``dos-posterior``, ``dos-point``) select only when the fit locates an
    interior optimum inside the supported region (`select.max_boundary_fraction`) unless
    `select.allow_boundary`; a refusal is reported and the method is not trained. Every method's
    subset is re-drawn per seed, so the intervals cover subset variance, not only data order.
    `primary` is the metric the comparison is judged on, declared before the runs.
    """

    budget: float = setting(5e4, lo=0, lo_open=True, help="token budget of every selection")
    methods: list[Method] = setting(
        factory=lambda: ["dos-posterior", "dos-point", "random", "low", "high", "full"], help="selection methods"
    )
    seeds: list[int] = setting(factory=lambda: [0, 1, 2, 3, 4], help="one re-drawn subset and run per seed")
    primary: Literal["domain_loss", "general_loss", "target_loss", "acc_norm", "acc"] = setting(
        "domain_loss", help="the metric the comparison is judged on"
    )
    mde: float | None = setting(
        None,
        lo=0,
        lo_open=True,
        help="pre-registered minimum detectable effect on the primary metric (the "
        "controls' verdicts: P1 needs oracle - random <= -3 x mde)",
    )
    recover: float = setting(0.5, lo=0, hi=1, help="pre-registered share of the oracle's gain DOS must recover (P2)")
    tasks: str | None = setting(
        None, help="multiple-choice JSONL for downstream accuracy (default: cloze tasks from the domain test split)"
    )
    lm_eval_tasks: str | None = setting(
        None,
        help="lm-evaluation-harness tasks (NAME[,NAME]) every final model is also evaluated on (needs the eval extra)",
    )
    lm_eval_include: str | None = setting(None, help="directory of lm-eval task YAMLs (e.g. experiments/lm_eval_tasks)")
    select: SelectConfig = setting(factory=SelectConfig, help="the selections' settings")


@dataclass
class StudyConfig:
    """`pplaw run`: the whole study."""

    name: str = setting("study", help="study name (the report's title)")
    out_dir: str = setting("runs/study", help="study directory")
    seed: int = setting(0, help="seed of every stage (offset per run)")
    base_model: str | None = setting(None, help="checkpoint dir, .gguf, or a known name; None = scratch")
    scratch: ScratchConfig = setting(factory=ScratchConfig, help="the scratch base model")
    data: DataConfig = setting(factory=DataConfig, help="corpora")
    landscape: ScoreConfig = setting(factory=ScoreConfig, help="pplaw score of the domain pool")
    train: TrainConfig = setting(factory=TrainConfig, help="every CPT run of the grid and the final comparison")
    grid: GridConfig = setting(factory=GridConfig, help="the law-fitting runs")
    fit: FitConfig = setting(factory=FitConfig, help="pplaw fit")
    final: FinalConfig = setting(factory=FinalConfig, help="the final comparison")
    eval: EvalConfig = setting(factory=EvalConfig, help="pplaw eval of every final model")


# Study keys filled from another key (one value for every stage that uses it), never set directly.
DERIVED = {
    "grid.design.moments": "fit.moments",
    "grid.windows.moments": "fit.moments",
    "grid.propose.selector": "grid.design.selector",
    "final.select.moments": "fit.moments",
    "final.select.selector": "grid.design.selector",
    "final.select.method": None,  # one per entry of final.methods
    "final.select.target": None,
}
# Keys of earlier study files, and where they live now.
RENAMED = {
    "grid.n": "grid.design.n",
    "grid.centre": "grid.design.centre",
    "grid.budgets": "grid.design.budgets",
    "grid.selector": "grid.design.selector",
    "grid.per_round": "grid.propose.n",
    "grid.acquisition": "grid.propose.acquisition",
    "grid.explore_margin": "grid.propose.trust_margin",
    "grid.stop_probability": "grid.propose.stop_probability",
    "final.allow_boundary": "final.select.allow_boundary",
    "final.max_boundary_fraction": "final.select.max_boundary_fraction",
    "scratch.seq_len": "scratch.train.seq_len",
    "scratch.batch_size": "scratch.train.batch_size",
    "scratch.lr": "scratch.train.lr",
    "scratch.warmup": "scratch.train.warmup",
}


# ---------------------------------------------------------------------- building and checking
def build(cls, tree: dict, where: str = ""):
    """Construct dataclass `cls` from a dict (YAML), converting numbers as the fields declare and
    rejecting unknown keys, bad enums and out-of-range values with their dotted path."""
    if not isinstance(tree, dict):
        raise PplawError(f"config section {where.rstrip('.') or '<root>'} must be a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in tree:
        if key not in known:
            dotted = where + str(key)
            hint = f" (now {RENAMED[dotted]})" if dotted in RENAMED else ""
            raise PplawError(f"unknown config key {dotted}{hint}")
    kwargs = {}
    for name, value in tree.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, value or {}, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(hint, value, where + name)
    cfg = cls(**kwargs)
    check(cfg, lambda name: where + name, recurse=False)
    return cfg


def _coerce(hint, value, key: str):
    """`value` as the field type `hint` declares (YAML 1.1 reads `1e5`, without a dot, as a string)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    try:
        if origin is list:
            if not isinstance(value, list):
                raise ValueError("expected a list")
            return [_coerce(args[0], v, key) for v in value]
        if origin is Literal:
            if value not in args:
                raise PplawError(f"config key {key}: {value!r} is not one of {', '.join(map(str, args))}")
            return value
        if hint is bool:
            if not isinstance(value, bool):
                raise PplawError(f"config key {key}: {value!r} is not true or false")
            return value
        if hint is int:
            return _strict_int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError("a boolean is not a number")
            return float(value)
        if hint is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError("not a string")
            return str(value)
        if hint is dict and not isinstance(value, dict):
            raise ValueError("not a mapping")
    except (TypeError, ValueError) as e:
        name = getattr(hint, "__name__", str(hint))
        raise PplawError(f"config key {key}: {value!r} is not a valid {name} ({e})") from None
    return value


def _strict_int(value) -> int:
    """An integer, or a float / string that is one (`1e3`); never a truncated `1.7`."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    number = float(value) if isinstance(value, str) else value
    if isinstance(number, float) and not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


def check(cfg, name_of, recurse: bool = True) -> None:
    """Range (field metadata) and enum checks of every field of `cfg`; `name_of(field)` is how an
    error names it (``train.lr`` in a study, ``--lr`` on the command line)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            if recurse:
                check(value, lambda name, p=f.name: name_of(f"{p}.{name}"), recurse=True)
            continue
        allowed = _literal_values(hints[f.name])
        for v in value if isinstance(value, list) else [value]:
            if v is None:
                continue
            if allowed is not None and v not in allowed:
                raise PplawError(f"{_label(name_of(f.name))}: {v!r} is not one of {', '.join(map(str, allowed))}")
            lo, hi, lo_open, hi_open = f.metadata.get("range", (None, None, False, False))
            if lo is None and hi is None:
                continue
            ok = (
                isinstance(v, (int, float))
                and math.isfinite(v)
                and (lo is None or (v > lo if lo_open else v >= lo))
                and (hi is None or (v < hi if hi_open else v <= hi))
            )
            if not ok:
                span = " and ".join(
                    s
                    for s in (
                        None if lo is None else f"{'>' if lo_open else '>='} {lo:g}",
                        None if hi is None else f"{'<' if hi_open else '<='} {hi:g}",
                    )
                    if s
                )
                raise PplawError(f"{_label(name_of(f.name))}: {v!r} out of range (must be {span})")


def _label(name: str) -> str:
    return name if name.startswith("--") else f"config key {name}"


def _literal_values(hint):
    for h in (hint, *typing.get_args(hint)):
        for inner in (h, *typing.get_args(h)):
            if typing.get_origin(inner) is Literal:
                return typing.get_args(inner)
    return None


def get_dotted(tree: dict, dotted: str):
    """The value at a dotted key of a nested dict (``fit.law``), None where any part is missing."""
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(tree: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def set_dotted(tree: dict, dotted: str) -> None:
    """Apply one `a.b.c=value` override to a nested dict; the value is parsed as YAML."""
    if "=" not in dotted:
        raise PplawError(f"override {dotted!r} is not of the form key=value")
    key, raw = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise PplawError(f"override {dotted!r}: {p!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def _merge(base: dict, child: dict) -> dict:
    """`child` over `base`, section by section (a mapping merges, anything else replaces)."""
    out = dict(base)
    for key, value in child.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_yaml(path: AnyPath, chain: tuple[AnyPath, ...] = ()) -> dict:
    """The study file's tree with its `base:` chain merged in (the child wins)."""
    if not path.is_file():
        raise PplawError(f"config file {path} not found")
    if path.resolve() in chain:  # (a URL resolves to itself)
        raise PplawError(f"config file {path}: `base:` chain loops back to itself")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise PplawError(f"config file {path} is not valid UTF-8") from None
    except yaml.YAMLError as e:
        raise PplawError(f"config file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(tree, dict):
        raise PplawError(f"config file {path}: expected a mapping of settings, got {type(tree).__name__}")
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise PplawError(f"config file {path}: `base:` must be a file name, got {base!r}")
    return _merge(_read_yaml(path.parent / base, (*chain, path.resolve())), tree)


def study_from_tree(tree: dict) -> StudyConfig:
    """A validated StudyConfig from a YAML tree: unknown and derived keys refused, derived keys
    filled, study-level consistency checked."""
    for key, source in DERIVED.items():
        if get_dotted(tree, key) is not None:
            why = f"it is {source}" if source else "it is set per entry of final.methods"
            raise PplawError(f"config key {key} cannot be set in a study: {why}")
    cfg = build(StudyConfig, tree)
    cfg.grid.design.moments = cfg.grid.windows.moments = cfg.final.select.moments = cfg.fit.moments
    cfg.grid.propose.selector = cfg.final.select.selector = cfg.grid.design.selector
    # one fact: a selection's (document, chunk) rows are chunks of the landscape's seq_len
    if get_dotted(tree, "train.seq_len") is None:
        cfg.train.seq_len = cfg.landscape.seq_len
    elif cfg.train.seq_len != cfg.landscape.seq_len:
        raise PplawError(
            f"config keys train.seq_len ({cfg.train.seq_len}) and landscape.seq_len "
            f"({cfg.landscape.seq_len}) differ: the selections' chunks exist only under the "
            "landscape's seq_len (set landscape.seq_len; train.seq_len follows it)"
        )
    check(cfg, lambda name: name)
    for key in ("grid.metric", "final.primary"):
        if get_dotted(dataclasses.asdict(cfg), key) == "target_loss" and not cfg.data.target_eval:
            raise PplawError(f"config key {key}: target_loss needs data.target_eval")
    if cfg.fit.law == "data":
        raise PplawError(
            "config key fit.law: a study needs auto or a perplexity-aware law (ppl, nointer, mu, quad, surface)"
        )
    if "oracle" in cfg.final.methods and cfg.data.contaminate.fraction is None:
        raise PplawError(
            "config key final.methods: 'oracle' needs the planted labels of data.contaminate "
            "(set data.contaminate.fraction)"
        )
    for w in cfg.grid.windows.windows:
        _check_window(w, "config key grid.windows.windows")
    return cfg


def _check_window(w: str, label: str) -> None:
    try:
        lo, hi = (float(x) for x in str(w).split("-"))
    except ValueError:
        raise PplawError(f"{label}: {w!r} is not a quantile window 'lo-hi'") from None
    if not 0 <= lo < hi <= 1:
        raise PplawError(f"{label}: {w!r} needs 0 <= lo < hi <= 1")


def load_config(path: PathSpec, overrides: Sequence[str] = ()) -> StudyConfig:
    """The study file (with its `base:` chain) and dotted `key=value` overrides, validated."""
    tree = _read_yaml(as_path(path))
    for o in overrides:
        set_dotted(tree, o)
    return study_from_tree(tree)


def config_to_dict(cfg: StudyConfig) -> dict:
    """The study's resolved configuration as a tree that `study_from_tree` reads back (derived keys
    left out: they follow from the others)."""
    tree = dataclasses.asdict(cfg)
    for key in DERIVED:
        *parents, last = key.split(".")
        node = tree
        for p in parents:
            node = node[p]
        node.pop(last, None)
    return tree


# ---------------------------------------------------------------------- flags
def parser_options() -> dict:
    """Keyword arguments of every `pplaw` (sub)parser: simple-parsing's argparse subclass with
    dashed flag names (``--seq-len``), the help of `cli_format` (metavars, each default once), no
    config-file flag, and no abbreviated flags (``--n`` of a subcommand must not be read as a prefix
    of the parent's ``--no-...`` switches)."""
    from simple_parsing import DashVariant

    from pplaw_jax.cli_format import HelpFormatter, Parser

    return dict(
        parser_class=Parser,
        add_option_string_dash_variants=DashVariant.DASH,
        add_config_path_arg=False,
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )


def add_settings(parser, cls, dest: str = "cfg") -> None:
    """The flags of every field of `cls` (``--seq-len`` for ``seq_len``), parsed by simple-parsing
    into ``args.<dest>`` as a `cls`; `check_settings` checks the ranges after parsing."""
    parser.add_arguments(cls, dest=dest)


def check_settings(args: argparse.Namespace) -> None:
    """Range and enum checks of every config dataclass on `args`, each error naming its flag."""
    for value in vars(args).values():
        if dataclasses.is_dataclass(value):
            check(value, lambda name: "--" + name.replace("_", "-"))


def settings_argv(cfg) -> list[str]:
    """`cfg` as the flags `add_settings` parses, every field spelled out (None: left out, which
    is its default), so a logged command states all its settings."""
    argv: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        flag = "--" + f.name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            if f.metadata.get("custom_args", {}).get("action") == "append":
                for v in value:
                    argv += [flag, _arg(v)]
            elif value:
                argv += [flag, *map(_arg, value)]
        else:
            argv += [flag, _arg(value)]
    return argv


def _arg(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
