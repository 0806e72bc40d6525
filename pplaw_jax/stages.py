"""Content keys of a study's stages: which outputs a changed configuration invalidates.

Each stage of `pplaw run` reads some configuration values and the outputs of some earlier stages.
Its key is a hash of exactly those values and of those stages' keys, so a change reaches the stage
that reads it and everything downstream, and nothing else: a new `fit.bootstrap` re-runs fit,
select and final, never the landscape or the law-fitting grid (unless sequential rounds, which fit
the law to choose their runs, are on). The report is rewritten on every run and has no key.

Inputs by content: every input file the configuration names (`FINGERPRINTED`: the corpora and eval
sets, the base model, the task files) enters the key of each stage that reads it through its
content fingerprint (`fileio.content_fingerprint`: names, sizes, first and last MiB), given in the
tree under ``inputs`` (`pipeline` computes them and records them in ``OUT/inputs.json``).  So a
corpus with documents appended reruns its landscape and what follows, as a changed setting does;
touching a file without changing it reruns nothing.

When a stage's key changes, its output directory is moved to ``OUT/superseded/<stage>-<old key>``
(nothing is deleted) and the stage runs again. The previous configuration is the study's
``config.yaml`` (with ``inputs.json``), so the keys of what is on disk are always recomputable.

Pure functions of the configuration tree (`pplaw_jax.config.config_to_dict`); the file moves are in
`supersede`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Set as AbstractSet

from pplaw_jax.config import get_dotted
from pplaw_jax.paths import AnyPath, PathSpec, as_path, move

_CORPUS_READ = ("data.builtin", "data.text_field", "data.id_field")
# the law-fitting runs' evaluation sets: the validation split (given, or cut from the documents after
# the scored ones) and the general and target sets; never the domain test split
_VALID_SETS = (
    "data.domain_valid",
    "data.domain_max_docs",
    "data.general_test",
    "data.target_eval",
    "data.eval_doc_chars",
    "data.eval_max_docs",
)

# stage -> (configuration values it reads, stages whose outputs it reads); in pipeline order
STAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "data": (("data", "final.tasks", "seed"), ()),
    "base": (
        (
            "base_model",
            "scratch",
            "seed",
            "data.general_train",
            *_CORPUS_READ,
            "landscape.seq_len",
            "train.seq_len",
        ),
        (),
    ),
    "landscape": (
        ("landscape", "data.domain_train", "data.domain_max_docs", "data.contaminate", *_CORPUS_READ),
        ("base",),
    ),
    "grid": (
        ("grid", "train", "seed", "fit.moments", "data.domain_train", "data.contaminate", *_CORPUS_READ, *_VALID_SETS),
        ("landscape",),
    ),
    "fit": (("fit", "seed"), ("grid",)),
    "select": (
        (
            "final.budget",
            "final.methods",
            "final.seeds",
            "final.select",
            "grid.design.selector",
            "fit.moments",
            "seed",
            "data.contaminate",
            "data.id_field",
        ),
        ("fit", "landscape"),
    ),
    "final": (
        ("final.tasks", "final.lm_eval_tasks", "final.lm_eval_include", "train", "eval", "seed", "data"),
        ("select", "base"),
    ),
}
# what `pplaw run` runs: the keyed stages, then the report (rewritten on every run)
STUDY_STAGES = (*STAGES, "report")
# configuration keys that name input files: a stage reading one also reads its content fingerprint
FINGERPRINTED = (
    "data.general_train",
    "data.general_test",
    "data.domain_train",
    "data.domain_valid",
    "data.domain_test",
    "data.target_eval",
    "base_model",
    "final.tasks",
    "final.lm_eval_include",
)
# sequential rounds fit the law (fit settings) and train a random control at the final budget
SEQUENTIAL_GRID_READS = ("fit", "final.budget")
# a scratch base model's pretraining is evaluated on the general test set, as the data stage cut it
SCRATCH_BASE_READS = ("data.general_test", "data.eval_doc_chars", "data.eval_max_docs")
SUPERSEDED = "superseded"


def stage_inputs(tree: dict, stage: str) -> dict:
    """The configuration values `stage` reads, by dotted key, and the content fingerprints of the
    input files among them (``content:<key>``, from ``tree["inputs"]``; absent when unknown)."""
    reads, _ = STAGES[stage]
    if stage == "grid" and get_dotted(tree, "grid.rounds"):
        reads = (*reads, *SEQUENTIAL_GRID_READS)
    if stage == "base" and get_dotted(tree, "base_model") is None:
        reads = (*reads, *SCRATCH_BASE_READS)
    out = {key: get_dotted(tree, key) for key in reads}
    inputs = tree.get("inputs") or {}
    for key in FINGERPRINTED:
        if inputs.get(key) is not None and any(key == r or key.startswith(r + ".") for r in reads):
            out[f"content:{key}"] = inputs[key]
    return out


def stage_keys(tree: dict) -> dict[str, str]:
    """Each stage's content key: a hash of the values it reads and of its upstream stages' keys."""
    keys: dict[str, str] = {}
    for stage, (_, upstream) in STAGES.items():
        record = {"config": stage_inputs(tree, stage), "upstream": {u: keys[u] for u in upstream}}
        keys[stage] = hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return keys


def downstream(stages: set[str]) -> set[str]:
    """`stages` and every stage that reads their outputs, directly or not."""
    found = set(stages)
    for stage, (_, upstream) in STAGES.items():  # pipeline order: upstream stages come first
        if found.intersection(upstream):
            found.add(stage)
    return found


def stale_stages(old_tree: dict | None, new_tree: dict, force: AbstractSet[str] = frozenset()) -> list[str]:
    """The stages whose outputs `new_tree` cannot reuse (in pipeline order): a changed key, or
    forced (with what depends on them). With no previous configuration, only the forced ones."""
    stale = set(force)
    if old_tree is not None:
        old, new = stage_keys(old_tree), stage_keys(new_tree)
        stale |= {s for s in STAGES if old[s] != new[s]}
    stale = downstream(stale)
    return [s for s in STAGES if s in stale]


def supersede(out_dir: PathSpec, stage: str, key: str) -> AnyPath | None:
    """Move the stage's output directory ``OUT/<stage>`` to ``OUT/superseded/<stage>-<key>[-N]``;
    None when there was nothing to move. One rename, so a kill leaves it either here or there
    (on an object store, `pplaw_jax.paths.move` copies, then deletes: a kill in between leaves
    the rest of the source, which the next run moves aside too, to ``-2``; nothing is lost)."""
    out = as_path(out_dir)
    src = out / stage
    if not src.exists():
        return None
    root = out / SUPERSEDED
    root.mkdir(exist_ok=True)
    dst = root / f"{stage}-{key}"
    n = 1
    while dst.exists():
        n += 1
        dst = root / f"{stage}-{key}-{n}"
    move(src, dst)  # one rename locally; on an object store a copy, then a delete
    return dst


def stages_record(tree: dict) -> dict:
    """What `pplaw run` writes to ``OUT/stages.json``: each stage's key and the values it read."""
    keys = stage_keys(tree)
    return {
        "stages": {s: {"key": keys[s], "config": stage_inputs(tree, s), "upstream": list(STAGES[s][1])} for s in STAGES}
    }
