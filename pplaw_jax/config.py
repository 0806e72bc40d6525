"""Study configuration: nested dataclasses read from YAML, with dotted command-line overrides.

`pplaw run CONFIG.yaml grid.budgets=[2e4,5e4] final.seeds=[0,1]` loads the YAML, applies each
`key=value` (the value parsed as YAML), and validates every key against the dataclasses below, so
a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pplaw_jax.errors import PplawError


@dataclass
class ScratchModel:
    """A small Llama-style base model pretrained from scratch on the general corpus."""

    hf_config: dict = field(default_factory=dict)  # HF config.json fields (LlamaConfig)
    vocab_size: int = 2048  # BPE tokenizer trained on the general corpus
    tokenizer_max_docs: int | None = None
    max_docs: int | None = None  # pretrain on the first N general documents
    steps: int = 300
    seq_len: int = 128
    batch_size: int = 16
    lr: float = 3e-3
    warmup: float = 0.05


@dataclass
class DataConfig:
    """Where the corpora live. `builtin: cpython-docs` writes them from the Python installation."""

    builtin: str | None = None
    general_train: str | None = None
    general_test: str | None = None
    domain_train: str | None = None
    domain_test: str | None = None
    text_field: str = "text"
    id_field: str = "id"
    domain_max_docs: int | None = None
    eval_max_docs: int | None = None
    eval_doc_chars: int | None = None  # cut each test document to a central window of N chars
    target_eval: str | None = None  # an evaluation corpus outside the training pool (target_loss)


@dataclass
class TrainSettings:
    """CPT settings shared by the law-fitting grid and the final runs."""

    seq_len: int = 128
    batch_size: int = 16
    lr: float = 1e-3
    warmup: float = 0.05
    dtype: str = "float32"
    mesh: str = "data=-1,fsdp=1,tensor=1"
    eval_every: int = 0


@dataclass
class LandscapeConfig:
    seq_len: int = 128
    batch_size: int = 32
    dtype: str = "float32"
    mesh: str = "data=-1,fsdp=1,tensor=1"


@dataclass
class GridConfig:
    """The law-fitting CPT runs: a space-filling 2-D design (default) or perplexity windows, then
    optional rounds of sequential design.

    ``design``: `n` initial runs (``centre`` of them replicated at the region's centre) whose
    subsets are drawn by `selector` (``tilted`` or ``bands``) at targets spread over the attainable
    ``(mu, sigma)`` region and over `budgets` (spanning at least 16x).  ``windows``: one run per
    perplexity-quantile window x budget (the paper's grid).  Then up to `rounds` rounds: fit ->
    `pplaw propose` (`per_round` runs by `acquisition`, inside the runs' hull widened by
    `explore_margin`) -> train, plus one re-drawn random subset at the final budget as a control,
    stopping early when the proposal's stopping rule says the optimum is located (``stop_early:
    false`` spends every round regardless, for a fixed run budget).  `metric` is the
    eval.json figure the law is fitted on (``domain_loss``, or ``target_loss`` with
    ``data.target_eval``).
    """

    kind: str = "design"
    budgets: list[float] = field(default_factory=lambda: [1e4, 4e4, 1.6e5])
    n: int = 24
    centre: int = 3
    selector: str = "tilted"
    windows: list[str] = field(default_factory=lambda: ["0-0.3", "0.2-0.6", "0.5-0.9", "0.7-1"])
    rounds: int = 0
    per_round: int = 4
    acquisition: str = "thompson"
    explore_margin: float = 0.25
    stop_probability: float = 0.9
    stop_early: bool = True
    metric: str = "domain_loss"


@dataclass
class FitConfig:
    law: str = "ppl"
    moments: str = "logppl"  # ppl (the paper's) or logppl; runs.csv carries both
    trust_margin: float = 0.1  # the supported region: the runs' hull widened by this
    method: str = "both"
    bootstrap: int = 200  # group-bootstrap refits of the point fit (intervals, interior check)
    chains: int = 4
    warmup: int = 500
    samples: int = 500
    target_accept: float = 0.9  # NUTS target acceptance; raise it when the fit reports divergences
    allow_unconverged: bool = False


@dataclass
class FinalConfig:
    """Final comparison: each selection method at one budget, several seeds.

    The law-guided methods (``dos-posterior``, ``dos-point``) select only when the fit locates an
    interior optimum inside the supported region (at most ``max_boundary_fraction`` of the draws
    on its edge) unless ``allow_boundary``; a refusal is reported and the method is not trained.
    Every method's subset is re-drawn per seed (random with a new seed, tilted DOS with the seed), so
    the intervals cover subset variance, not only data order.  `primary` is the metric the
    comparison is judged on, declared before the runs.
    """

    budget: float = 5e4
    methods: list[str] = field(
        default_factory=lambda: ["dos-posterior", "dos-point", "random", "low", "high", "full"]
    )
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    primary: str = "domain_loss"  # the metric the comparison is judged on, declared before the runs
    tasks: str | None = None  # multiple-choice JSONL for downstream accuracy
    allow_boundary: bool = False
    max_boundary_fraction: float = 0.2


@dataclass
class StudyConfig:
    name: str = "study"
    out_dir: str = "runs/study"
    seed: int = 0
    base_model: str | None = None  # checkpoint dir, .gguf, or a known name; None = scratch
    scratch: ScratchModel = field(default_factory=ScratchModel)
    data: DataConfig = field(default_factory=DataConfig)
    landscape: LandscapeConfig = field(default_factory=LandscapeConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    grid: GridConfig = field(default_factory=GridConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    final: FinalConfig = field(default_factory=FinalConfig)


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


def _build(cls, tree: dict, where: str):
    """Construct dataclass `cls` from a dict, rejecting unknown keys with their dotted path."""
    if not isinstance(tree, dict):
        raise PplawError(f"config section {where or '<root>'} must be a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - names)
    if unknown:
        raise PplawError(f"unknown config key(s) {', '.join(where + k for k in unknown)}")
    kwargs = {}
    for name, value in tree.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{where}{name}.")
        else:
            kwargs[name] = _coerce(hint, value, where + name)
    return cls(**kwargs)


def _coerce(hint, value, key: str):
    """Numbers as the dataclass declares them: YAML 1.1 reads `1e5` (no dot) as a string."""
    if value is None:
        return None
    scalar = {int: _strict_int, float: float}
    args = typing.get_args(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise PplawError(f"config key {key}: {value!r} is not true or false")
        return value
    try:
        if hint in scalar:
            return scalar[hint](value)
        if typing.get_origin(hint) is list and args and args[0] in scalar:
            return [scalar[args[0]](v) for v in value]
        if float in args or int in args:  # Optional[number]
            return scalar[float if float in args else int](value)
    except (TypeError, ValueError) as e:
        raise PplawError(f"config key {key}: {value!r} is not a valid {getattr(hint, '__name__', hint)}") from e
    return value


def _strict_int(value) -> int:
    """An integer, or a float / string that is one (`1e3`); never a truncated `1.7`."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    number = float(value) if isinstance(value, str) else value
    if isinstance(number, float) and not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number")
    return int(number)


# (key, lowest, highest, lowest allowed itself): checked at load; a list value is checked item by item
RANGES = [
    ("train.lr", 0, None, False), ("train.seq_len", 2, None, True), ("train.batch_size", 1, None, True),
    ("train.warmup", 0, None, True), ("train.eval_every", 0, None, True),
    ("scratch.lr", 0, None, False), ("scratch.steps", 1, None, True), ("scratch.seq_len", 2, None, True),
    ("scratch.batch_size", 1, None, True), ("scratch.vocab_size", 2, None, True),
    ("landscape.seq_len", 2, None, True), ("landscape.batch_size", 1, None, True),
    ("grid.budgets", 0, None, False), ("grid.n", 2, None, True), ("grid.centre", 0, None, True),
    ("grid.explore_margin", 0, None, True), ("grid.stop_probability", 0, 1, False),
    ("fit.trust_margin", 0, None, True), ("fit.bootstrap", 0, None, True), ("fit.chains", 1, None, True),
    ("fit.warmup", 1, None, True), ("fit.samples", 1, None, True), ("fit.target_accept", 0, 1, False),
    ("final.budget", 0, None, False), ("final.max_boundary_fraction", 0, 1, True),
]


def _check_ranges(cfg) -> None:
    for key, lo, hi, closed in RANGES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        for v in value if isinstance(value, list) else [value]:
            if v is None:
                continue
            ok = math.isfinite(v) and (v >= lo if closed else v > lo) and (hi is None or v <= hi)
            if not ok:
                span = f"{'>=' if closed else '>'} {lo}" + (f" and <= {hi}" if hi is not None else "")
                raise PplawError(f"config key {key}: {v!r} out of range (must be {span})")
    for w in cfg.grid.windows:
        try:
            lo, hi = (float(x) for x in str(w).split("-"))
        except ValueError:
            raise PplawError(f"config key grid.windows: {w!r} is not a quantile window 'lo-hi'") from None
        if not 0 <= lo < hi <= 1:
            raise PplawError(f"config key grid.windows: {w!r} needs 0 <= lo < hi <= 1")


CHOICES = {
    "grid.kind": ("design", "windows"),
    "grid.selector": ("tilted", "bands"),
    "fit.moments": ("ppl", "logppl"),
    "fit.law": ("ppl", "nointer", "mu", "quad"),
    "fit.method": ("point", "bayes", "both"),
    "grid.acquisition": ("thompson", "uncertainty"),
    "grid.metric": ("domain_loss", "target_loss"),
    "final.primary": ("domain_loss", "general_loss", "target_loss", "acc_norm", "acc"),
}
METHODS = ("dos-posterior", "dos-point", "random", "low", "high", "mid", "full")


def validate(cfg: StudyConfig) -> StudyConfig:
    """Enum fields, method names and value ranges, checked when the config loads (not hours later)."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise PplawError(f"config key {key}: {value!r} is not one of {', '.join(allowed)}")
    for key in ("grid.metric", "final.primary"):
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) == "target_loss" and not cfg.data.target_eval:
            raise PplawError(f"config key {key}: target_loss needs data.target_eval")
    _check_ranges(cfg)
    if cfg.grid.rounds < 0 or cfg.grid.per_round < 1:
        raise PplawError("config keys grid.rounds (>= 0) and grid.per_round (>= 1) out of range")
    bad = [m for m in cfg.final.methods if m not in METHODS]
    if bad:
        raise PplawError(f"config key final.methods: unknown method(s) {', '.join(map(repr, bad))}; "
                         f"known: {', '.join(METHODS)}")
    return cfg


def load_config(path: str | Path, overrides: list[str] = ()) -> StudyConfig:
    path = Path(path)
    if not path.is_file():
        raise PplawError(f"config file {path} not found")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise PplawError(f"config file {path} is not valid UTF-8") from None
    except yaml.YAMLError as e:
        raise PplawError(f"config file {path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(tree, dict):
        raise PplawError(f"config file {path}: expected a mapping of settings, got {type(tree).__name__}")
    for o in overrides:
        set_dotted(tree, o)
    return validate(_build(StudyConfig, tree, ""))


def config_to_dict(cfg: StudyConfig) -> dict:
    return dataclasses.asdict(cfg)
