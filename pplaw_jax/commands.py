"""Each subcommand's inputs as one dataclass: its arguments (inputs, outputs, seed, run length) as
fields and its stage settings (`pplaw_jax.config`) as the field `cfg`.

A subcommand's parser is built from its class (`add_command`), argparse hands its handler an
instance (`from_namespace`), and `pplaw run` builds instances and turns them into the command lines
it runs and logs (`argv`): a flag is spelled, typed and documented once, here. The class also says
which arguments are inputs that ``--out`` may not overwrite (``arg(input=True)``) and whether
``--out`` is a file (``OUT_IS_FILE``).

Field names are argparse's dests: ``runs_dir`` is ``--runs-dir``; `argv` writes the fields in
declaration order, None left out, then the settings (`config.settings_argv`), then positionals.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from pplaw_jax.config import (
    DesignConfig,
    EvalConfig,
    FitConfig,
    ProposeConfig,
    ScoreConfig,
    SelectConfig,
    TrainConfig,
    WindowsConfig,
    add_settings,
    settings_argv,
)
from pplaw_jax.stages import STAGES, STUDY_STAGES

CORPUS_HELP = "file, directory or glob of .jsonl/.jsonl.gz/.parquet/.txt, or tfds:NAME[/CONFIG]:SPLIT"
TEXT_FIELD_HELP = "JSON field / Parquet column with the text"
ID_FIELD_HELP = "document id field"
LM_EVAL_INSTALL = "pip install 'lm_eval>=0.4.13,<0.5' (or, in the pplaw_jax checkout, pip install -e '.[eval]')"


def _budget(value: str) -> int:
    """``--tokens`` of `pplaw train` (`select.core.parse_budget`, imported when a value is parsed:
    `pplaw_jax.select` imports the law's numerics, which a command's parser does not need)."""
    from pplaw_jax.select.core import parse_budget

    return parse_budget(value)


def arg(
    default: Any = None,
    *,
    help: str,
    required: bool = False,
    input: bool = False,
    positional: bool = False,
    exclusive: str | None = None,
    **argparse_kwargs,
) -> Any:
    """An argument of a command: its help, whether it is required, an input (``--out`` may not be,
    lie inside or contain it), a positional, or one of a mutually `exclusive` group (required when
    its members are), and any other argparse keyword (``type``, ``metavar``, ``choices``, ``nargs``,
    ``action``). A list default is copied per instance."""
    meta = dict(
        help=help, required=required, input=input, positional=positional, exclusive=exclusive, argparse=argparse_kwargs
    )
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def settings(cls: type, dest: str = "cfg") -> Any:
    """The command's stage settings: every field of `cls` a flag (`config.add_settings`), parsed
    into ``args.<dest>`` (a mode's settings get their own dest, apart from its parent's)."""
    return dataclasses.field(default_factory=cls, metadata=dict(settings=True, dest=dest))


@dataclass
class Command:
    """A subcommand's inputs; `WORDS` is its name on the command line (``("data", "cut")``)."""

    WORDS: ClassVar[tuple[str, ...]] = ()
    OUT_IS_FILE: ClassVar[bool] = False


def _arguments(cls: type[Command]) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("settings")]


def _settings_field(cls: type[Command]) -> dataclasses.Field | None:
    return next((f for f in dataclasses.fields(cls) if f.metadata.get("settings")), None)


def add_command(parser: argparse.ArgumentParser, cls: type[Command]) -> None:
    """The flags (and positionals) of `cls` on `parser`, and the flags of its settings."""
    groups: dict[str, Any] = {}
    for f in _arguments(cls):
        m = f.metadata
        kwargs = dict(m["argparse"], help=m["help"])
        if m["positional"]:
            parser.add_argument(f.name, **kwargs)
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        target: Any = parser
        if m["exclusive"]:
            if m["exclusive"] not in groups:
                members = [g for g in _arguments(cls) if g.metadata["exclusive"] == m["exclusive"]]
                is_required = any(g.metadata["required"] for g in members)
                groups[m["exclusive"]] = parser.add_mutually_exclusive_group(required=is_required)
            target = groups[m["exclusive"]]
        else:
            kwargs["required"] = m["required"]
        target.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=default, **kwargs)
    s = _settings_field(cls)
    if s is not None:
        add_settings(parser, _settings_class(cls), dest=s.metadata["dest"])


def _settings_class(cls: type[Command]) -> type:
    s = _settings_field(cls)
    assert s is not None
    return typing.get_type_hints(cls)[s.name]


def from_namespace(cls: type[Command], args: argparse.Namespace) -> Any:
    """The `cls` instance argparse parsed into `args`."""
    values = {f.name: getattr(args, f.name) for f in _arguments(cls)}
    s = _settings_field(cls)
    if s is not None:
        values[s.name] = getattr(args, s.metadata["dest"])
    return cls(**values)


def argv(cmd: Command) -> list[str]:
    """`cmd` as the command line that parses back into it: its words, its flags in declaration
    order (None left out, a list repeated per item for an ``append`` flag, else given once), every
    setting spelled out, then its positionals."""
    words: list = list(cmd.WORDS)
    positionals: list = []
    for f in _arguments(type(cmd)):
        value = getattr(cmd, f.name)
        if f.metadata["positional"]:
            positionals += value if isinstance(value, list) else [value]
            continue
        flag = "--" + f.name.replace("_", "-")
        if value is None or value == []:
            continue
        if f.metadata["argparse"].get("action") == "append":
            for item in value:
                words += [flag, item]
        elif isinstance(value, list):
            words += [flag, *value]
        else:
            words += [flag, value]
    s = _settings_field(type(cmd))
    if s is not None:
        words += settings_argv(getattr(cmd, s.name))
    return [_word(w) for w in (*words, *positionals)]


def _word(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------- data
@dataclass
class CpythonDocsCommand(Command):
    WORDS = ("data", "cpython-docs")
    out: str = arg(required=True, help="directory for {general,domain}_{train,valid,test}.jsonl")
    test_every: int = arg(10, type=int, help="every K-th document goes to test, the one before it to valid")


@dataclass
class CorpusFileCommand(Command):
    """A `pplaw data` mode that writes one JSONL file from a corpus."""

    OUT_IS_FILE = True
    data: str = arg(required=True, input=True, help="corpus (same spec as pplaw score)")
    out: str = arg(required=True, help="JSONL file to write")
    text_field: str = arg("text", help=TEXT_FIELD_HELP)
    id_field: str = arg("id", help=ID_FIELD_HELP)


@dataclass
class CutCommand(CorpusFileCommand):
    WORDS = ("data", "cut")
    chars: int | None = arg(
        type=int, help="characters kept from the middle of each document (default: the whole document)"
    )
    max_docs: int | None = arg(type=int, help="the first N documents only (after --skip-docs)")
    skip_docs: int = arg(0, type=int, help="skip the first K documents (e.g. a validation split after the scored ones)")


@dataclass
class ClozeCommand(CorpusFileCommand):
    WORDS = ("data", "cloze")
    n: int = arg(200, type=int, help="number of tasks")
    seed: int = arg(0, type=int, help="seed of the prefixes and distractors")


@dataclass
class ContaminateCommand(CorpusFileCommand):
    WORDS = ("data", "contaminate")
    fraction: float = arg(
        0.3, type=float, help="junk share of the output's documents, in [0, 1) (0: the negative control)"
    )
    low_share: float = arg(
        0.5, type=float, help="share of the junk documents in the low-perplexity class (general, boilerplate)"
    )
    kinds: str = arg(
        "general,boilerplate,garbled,shuffled,table",
        help="junk kinds (comma list): low class general,boilerplate; high class garbled,shuffled,table",
    )
    general: str | None = arg(
        input=True,
        help="general-domain corpus for the 'general' kind (e.g. Project Gutenberg books; "
        "read whole, with the same --text-field / --id-field)",
    )
    max_docs: int | None = arg(type=int, help="the first N clean documents only")
    seed: int = arg(0, type=int, help="seed of the junk and of the order")


# ---------------------------------------------------------------------- models and landscapes
@dataclass
class ScratchCommand(Command):
    WORDS = ("scratch",)
    data: str = arg(required=True, input=True, help="corpus the tokenizer is trained on (same spec as pplaw score)")
    vocab_size: int = arg(required=True, type=int, help="BPE vocabulary size")
    out: str = arg(required=True, help="directory for tokenizer/ and init_config.json")
    max_docs: int | None = arg(type=int, help="train the tokenizer on the first N documents")
    text_field: str = arg("text", help=TEXT_FIELD_HELP)
    id_field: str = arg("id", help=ID_FIELD_HELP)
    fields: list[str] = arg(
        [], positional=True, nargs="*", metavar="KEY=VALUE", help="HF config.json fields, e.g. hidden_size=128"
    )


@dataclass
class ScoreCommand(Command):
    WORDS = ("score",)
    model: str = arg(
        required=True, input=True, help="HF checkpoint directory, .gguf file, hub id org/name[@rev], or a model alias"
    )
    data: str = arg(required=True, input=True, help=CORPUS_HELP)
    out: str = arg(required=True, help="landscape directory (resumed if it holds the same run)")
    text_field: str = arg("text", help="JSON field / Parquet column / TFDS feature with the text")
    id_field: str = arg("id", help="document id field (default id; else FILE:LINE)")
    max_docs: int | None = arg(type=int, help="score only the first N documents (all hosts)")
    cfg: ScoreConfig = settings(ScoreConfig)


@dataclass
class ExportCommand(Command):
    WORDS = ("landscape", "export")
    landscape: str = arg(required=True, input=True, help="landscape directory from `pplaw score`")
    data: str = arg(required=True, input=True, help="the corpus it scored (same spec as pplaw score)")
    out: str = arg(required=True, help="directory for landscape.parquet or dataset/")
    format: str = arg(
        "parquet",
        choices=("parquet", "hf"),
        help="parquet: OUT/landscape.parquet; hf: a datasets directory OUT/dataset",
    )
    text_field: str = arg("text", help="JSON field / column with the text")
    id_field: str = arg("id", help="document id field (default id; else FILE:LINE)")


# ---------------------------------------------------------------------- runs and fits
@dataclass
class RunsCommand(Command):
    WORDS = ("runs",)
    OUT_IS_FILE = True
    out: str = arg(required=True, help="runs table to write (CSV)")
    metric: str = arg(
        "domain_loss", choices=("domain_loss", "target_loss"), help="the eval.json figure that becomes the law's loss"
    )
    include: str | None = arg(input=True, help="an earlier runs table whose rows come first")
    round: int = arg(0, type=int, help="the round number recorded in new rows")
    manifest: str | None = arg(
        input=True, help="a selection directory with manifest.csv (select design/windows, propose)"
    )
    runs_dir: str | None = arg(input=True, help="where the manifest's runs are (RUNS/<name>/eval.json)")
    run: list[str] = arg(
        [], input=True, action="append", metavar="GROUP=RUN_DIR", help="one more run, its own group; repeatable"
    )


@dataclass
class FitCommand(Command):
    WORDS = ("fit",)
    runs: str = arg(
        required=True,
        input=True,
        help="CSV with columns mu_<kind>, sigma_<kind>, tokens, loss (optional run_id, group)",
    )
    out: str = arg(required=True, help="fit directory to write")
    seed: int = arg(0, type=int, help="seed of the starts, bootstrap, folds and NUTS")
    cfg: FitConfig = settings(FitConfig)


@dataclass
class PredictCommand(Command):
    WORDS = ("predict",)
    OUT_IS_FILE = True
    fit: str = arg(required=True, input=True, help="fit directory written by pplaw fit")
    mu: list[float] | None = arg(type=float, nargs="+", help="mean chunk perplexity of the subset")
    sigma: list[float] | None = arg(type=float, nargs="+", help="std of chunk perplexity of the subset")
    tokens: list[float] | None = arg(type=float, nargs="+", help="training tokens D")
    points: str | None = arg(input=True, help="CSV of points with columns mu, sigma, tokens (instead of the flags)")
    level: float = arg(0.9, type=float, help="interval probability (default 0.9)")
    seed: int = arg(0, type=int, help="seed of the predictive noise draws")
    out: str | None = arg(help="write the CSV here instead of stdout")


# ---------------------------------------------------------------------- selections
@dataclass
class SelectCommand(Command):
    """`pplaw select`: one selection; ``--landscape`` and ``--out`` are required (checked by the
    handler: a mode, design or windows, takes its own)."""

    WORDS = ("select",)
    landscape: str | None = arg(
        input=True,
        help="landscape directory from `pplaw score` (required unless a mode, design or windows, is given)",
    )
    out: str | None = arg(help="output directory (required unless a mode, design or windows, is given)")
    seed: int = arg(0, type=int, help="seed of the random draws")
    tokens: str | None = arg(help="token budget in scored tokens, e.g. 1e6")
    fit: str | None = arg(input=True, help="fit directory from `pplaw fit` (DOS target, predicted loss)")
    target_mu: float | None = arg(type=float, help="explicit DOS target mu")
    target_sigma: float | None = arg(type=float, help="explicit DOS target sigma")
    labels: str | None = arg(
        input=True,
        help="--method oracle: a corpus from `pplaw data contaminate` whose documents labelled clean the "
        "oracle samples from",
    )
    id_field: str = arg("id", help="--labels: the document id field")
    cfg: SelectConfig = settings(SelectConfig)


@dataclass
class GridCommand(Command):
    """A `pplaw select` mode that writes a manifest of law-fitting subsets."""

    landscape: str = arg(required=True, input=True, help="landscape directory from `pplaw score`")
    out: str = arg(required=True, help="output directory")
    seed: int = arg(0, type=int, help="seed of the random draws")


@dataclass
class DesignCommand(GridCommand):
    WORDS = ("select", "design")
    cfg: DesignConfig = settings(DesignConfig, dest="design")


@dataclass
class WindowsCommand(GridCommand):
    WORDS = ("select", "windows")
    cfg: WindowsConfig = settings(WindowsConfig, dest="windows")


@dataclass
class ProposeCommand(Command):
    WORDS = ("propose",)
    fit: str = arg(required=True, input=True, help="fit directory from `pplaw fit`")
    landscape: str = arg(required=True, input=True, help="landscape directory from `pplaw score`")
    tokens: str = arg(required=True, help="token budget of the proposed runs")
    out: str = arg(required=True, help="output directory")
    prefix: str = arg("q", help="name prefix of the proposals")
    seed: int = arg(0, type=int, help="seed of the draws and the subsets")
    cfg: ProposeConfig = settings(ProposeConfig)


# ---------------------------------------------------------------------- training and evaluation
@dataclass
class TrainCommand(Command):
    WORDS = ("train",)
    model: str = arg(
        required=True,
        input=True,
        help="HF checkpoint directory, .gguf file, hub id org/name[@rev], a model alias, or scratch:CONFIG.json",
    )
    tokenizer: str | None = arg(input=True, help="tokenizer directory (Tokenizer.save) for --model scratch:...")
    data: str = arg(required=True, input=True, help="training corpus (same spec as pplaw score)")
    selection: str | None = arg(input=True, help="selection.parquet (or its directory): train on these chunks only")
    out: str = arg(required=True, help="run directory (resumed if it holds the same run)")
    tokens: int | None = arg(
        type=_budget, exclusive="length", help="run length in tokens, e.g. 1e6: steps = ceil(N / (B*(L-1)))"
    )
    steps: int | None = arg(type=int, exclusive="length", help="run length in steps (default: one epoch)")
    seed: int = arg(0, type=int, help="data order (and scratch init) seed")
    eval_data: str | None = arg(input=True, help="domain test corpus: its mean token loss is the law's L")
    general_eval_data: str | None = arg(input=True, help="general-domain test corpus (forgetting)")
    target_eval_data: str | None = arg(
        input=True,
        help="an evaluation set outside the training pool (e.g. a second corpus of the domain); "
        "its mean token loss is eval.json's target_loss",
    )
    eval_max_docs: int | None = arg(type=int, help="evaluate on the first N documents of each set")
    text_field: str = arg("text", help=TEXT_FIELD_HELP)
    id_field: str = arg("id", help=ID_FIELD_HELP)
    max_docs: int | None = arg(type=int, help="read only the first N training documents")
    cfg: TrainConfig = settings(TrainConfig)


@dataclass
class EvalCommand(Command):
    WORDS = ("eval",)
    OUT_IS_FILE = True
    model: str = arg(
        required=True,
        input=True,
        help="HF checkpoint directory (e.g. RUN/hf), .gguf file, hub id org/name[@rev], or a model alias",
    )
    tasks: str | None = arg(
        required=True,
        input=True,
        exclusive="tasks",
        help='JSONL rows {"question", "choices": [...], "answer": i, ["context"]}',
    )
    lm_eval_tasks: str | None = arg(
        required=True,
        exclusive="tasks",
        metavar="NAME[,NAME]",
        help=f"lm-evaluation-harness tasks, groups or tags (needs: {LM_EVAL_INSTALL})",
    )
    lm_eval_include: str | None = arg(
        input=True,
        metavar="DIR",
        help="directory of lm-eval task YAMLs searched before lm-eval's own (e.g. experiments/lm_eval_tasks)",
    )
    lm_eval_num_fewshot: int | None = arg(
        type=int, metavar="N", help="few-shot exemplars per question (default: each task's own setting, else 0)"
    )
    out: str | None = arg(help="results JSON (default: print the summary only)")
    cfg: EvalConfig = settings(EvalConfig)


# ---------------------------------------------------------------------- studies
@dataclass
class ReportCommand(Command):
    WORDS = ("report",)
    study: str = arg(positional=True, help="a study directory written by `pplaw run` (its out_dir)")


@dataclass
class RunCommand(Command):
    WORDS = ("run",)
    config: str = arg(positional=True, help="study YAML (see experiments/configs/)")
    overrides: list[str] = arg([], positional=True, nargs="*", help="dotted overrides, e.g. final.seeds=[0,1]")
    until: str | None = arg(
        choices=STUDY_STAGES,
        metavar="STAGE",
        help=f"stop after this stage ({', '.join(STUDY_STAGES)})",
    )
    force: list[str] = arg(
        [],
        action="append",
        choices=tuple(STAGES),
        metavar="STAGE",
        help="re-run this stage and everything downstream of it even if its inputs are "
        "unchanged (its outputs are moved to OUT/superseded/); repeatable",
    )


COMMAND_CLASSES: dict[str, type[Command]] = {
    " ".join(cls.WORDS): cls
    for cls in (
        CpythonDocsCommand,
        CutCommand,
        ClozeCommand,
        ContaminateCommand,
        ScratchCommand,
        ScoreCommand,
        ExportCommand,
        RunsCommand,
        FitCommand,
        PredictCommand,
        SelectCommand,
        DesignCommand,
        WindowsCommand,
        ProposeCommand,
        TrainCommand,
        EvalCommand,
        ReportCommand,
        RunCommand,
    )
}


def command_class(args: argparse.Namespace) -> type[Command]:
    """The class of the (sub)command `args` was parsed for (``select design`` before ``select``)."""
    mode = getattr(args, "mode", None)
    return COMMAND_CLASSES.get(f"{args.command} {mode}") or COMMAND_CLASSES[args.command]


def inputs(cls: type[Command]) -> tuple[str, ...]:
    """The dests of `cls`'s inputs: what its ``--out`` may not be, be inside or contain."""
    return tuple(f.name for f in _arguments(cls) if f.metadata["input"])
