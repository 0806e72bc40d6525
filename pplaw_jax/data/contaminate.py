"""A domain corpus with planted junk of known kinds and fraction: the positive control of data selection.

`pplaw data contaminate` writes the clean documents of a domain corpus, unchanged, interleaved
with junk documents of known kinds, each row labelled ``"junk": KIND`` (``"none"`` for clean). A
selection method that finds value where value exists should drop (or down-weight) the junk; the
same command with ``--fraction 0`` writes the clean corpus with the same labels, the negative
control, where no selection should claim a gain.

The recipe (the experiment's protocol; `VERSION` names it, and a change to it gets a new version):

1. **Clean documents.** The first ``--max-docs`` documents of ``--data`` (all when omitted), in
   reading order (`pplaw_jax.data.iter_documents`), each written unchanged as ``{id, text,
   "junk": "none"}`` (other fields of the input are not copied). An empty corpus, or one whose
   documents are all empty or whitespace, is an error.
2. **How much junk.** ``n_junk = round(fraction * n_clean / (1 - fraction))`` junk documents, so
   junk is ``fraction`` of the output's documents (``0 <= fraction < 1``; Python's ``round``).
3. **Two classes.** Low-perplexity junk (text a base model already finds easy): ``general`` and
   ``boilerplate``. High-perplexity junk (noise a model cannot learn from): ``garbled``,
   ``shuffled`` and ``table``. ``n_low = round(low_share * n_junk)`` documents go to the low class
   and the rest to the high class; when ``--kinds`` leaves one class without kinds, all junk goes
   to the other class (the manifest's ``class_note`` says so). Within a class, document ``i`` of
   the class gets kind ``kinds[i % len(kinds)]`` (round robin) over the class's requested kinds in
   the canonical order `KINDS` (so the order in which ``--kinds`` lists them does not matter), hence
   the counts of a class's kinds differ by at most one.
4. **Length.** Each junk document draws a clean document (uniformly, among those with text) and
   takes its length in characters as its target length, so the junk fraction by characters is
   about the fraction by documents; the manifest records both.
5. **Kinds.**

   * ``general``: a window of the target length from a document drawn uniformly from the
     ``--general`` corpus (e.g. Project Gutenberg books; all of it is read), starting at a uniform
     position moved back to the start of its word; the whole document if it is shorter.
   * ``boilerplate``: paragraphs drawn uniformly from `BOILERPLATE` (five fixed registry /
     administrative templates), each with its slots (names, numbers, dates, phone numbers) filled
     with fresh seeded values, joined by blank lines until the target length is reached, then cut
     back to a word boundary at most the target length: near-duplicate templated text.
   * ``garbled``: the drawn clean document itself with OCR-like corruption: each character is, with
     probability `GARBLE_RATE` (0.25), substituted by a random letter, digit or punctuation mark
     (half of those), deleted (a fifth), preceded by an inserted random character (15%), or
     preceded by a space inside a word (15%: a split word; substituted instead when not inside a
     word), so about a quarter of the characters carry an edit.
   * ``shuffled``: the words (whitespace-separated) of the drawn clean document in a random order,
     joined by single spaces.
   * ``table``: a header line `TABLE_HEADER` and rows like ``NCT04839201 | 37.2 | 0.014 | A7F3-22 |
     2019-03-14`` (a registry-like id, two decimals, a hex lot id, a date, all random), one per
     line, as many whole rows as fit in the target length (at least one).
6. **Order and ids.** Junk document ``k`` (0-based) of a kind has id ``junk-<kind>-<k>``; a clean id
   equal to one is an error. Clean and junk rows are written in one seeded random permutation.
7. **Randomness.** Every draw comes from numpy's PCG64 seeded by ``[seed, stream, ...]``: one stream
   per junk document (by kind and index) and one for the order, so the output is a function of the
   inputs and ``--seed`` alone: the same inputs and seed give byte-identical files.

The output manifest (``OUT`` with ``.manifest.json`` for ``.jsonl``, written last: it marks the
output complete) holds the recipe, the sources with their sha256, the counts per kind (documents
and characters), the class of each kind, the junk fractions by documents and by characters, and the
output's sha256. This module is the pure core (`contaminate` on lists of texts); ``pplaw data
contaminate`` (`pplaw_jax.data.cli`) reads and writes the files.
"""

from __future__ import annotations

import datetime
import string
from collections.abc import Sequence

import numpy as np

from pplaw_jax.errors import PplawError

VERSION = "pplaw-contaminate/1"
LOW_KINDS = ("general", "boilerplate")
HIGH_KINDS = ("garbled", "shuffled", "table")
KINDS = LOW_KINDS + HIGH_KINDS
KIND_CLASS = {**{k: "low" for k in LOW_KINDS}, **{k: "high" for k in HIGH_KINDS}}
CLEAN = "none"  # the "junk" label of a clean document
LABEL_FIELD = "junk"
GARBLE_RATE = 0.25
NOISE_CHARS = string.ascii_letters + string.digits + string.punctuation
TABLE_HEADER = "trial_id | value | p_value | lot | date"
_STREAM_ORDER = 0
_STREAM_JUNK = 1

BOILERPLATE = (
    "For more information about this study, contact the study coordinator, {name}, at the "
    "{site} Clinical Research Office, Room {room}, {street} Street. Phone: {phone}. Office hours "
    "are Monday to Friday, 9:00 a.m. to 5:00 p.m. Please have your reference number "
    "{ref} ready when you call. Messages left after hours will be returned within {days} business "
    "days. This information was last updated on {date}.",
    "Eligibility criteria are subject to change. The information on this page is provided for "
    "general reference only and does not replace the advice of a qualified health professional. "
    "Participation in a research study is voluntary, and you may withdraw at any time without "
    "penalty. Record {ref} was first submitted on {date} and has been reviewed {count} times. "
    "Questions about your rights as a participant may be directed to the review board at {phone}.",
    "Study record {ref}. Sponsor: {site} Health Research Foundation. Responsible party: {name}, "
    "Principal Investigator. Enrollment: {count} participants (estimated). Allocation: randomized. "
    "Study start: {date}. Primary completion: {date2}. Last verified: {date3}. The sponsor has "
    "certified that the information in this record is complete and accurate as of the date shown. "
    "For questions about this record, call {phone}.",
    "Terms of use. By accessing this registry you agree to the following terms. Content may be "
    "reproduced for non-commercial purposes provided that the source is acknowledged. The registry "
    "does not endorse any study listed here. Listing a study does not mean it has been evaluated by "
    "the registry. Document {ref}, revision {room}, effective {date}. Contact the registry help desk "
    "at {phone} or write to {name}, {street} Street, Suite {days}.",
    "Notice of privacy practices. Personal information collected at the {site} site is stored "
    "securely and used only for the purposes described in the consent form. Records are kept for "
    "{days} years after the study ends and are then destroyed. You may request a copy of your records "
    "by contacting the privacy officer, {name}, at {phone}. Reference {ref}. This notice took effect "
    "on {date} and replaces all earlier versions. Page {count} of {room}.",
)
_NAMES = (
    "Anderson",
    "Baker",
    "Carter",
    "Dawson",
    "Ellis",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ivanova",
    "Johnson",
    "Kowalski",
    "Lambert",
    "Moreno",
    "Nakamura",
    "Olsen",
    "Patel",
)
_SITES = ("Riverside", "Northfield", "Lakeview", "Westbrook", "Greenhill", "Oakdale", "Bayside")
_STREETS = ("Main", "Elm", "Maple", "Cedar", "Park", "Church", "Mill", "Station")
_DATE_FIRST = datetime.date(1995, 1, 1).toordinal()
_DATE_SPAN = datetime.date(2024, 12, 31).toordinal() - _DATE_FIRST + 1


def parse_kinds(text: str) -> list[str]:
    """``--kinds`` (a comma list) -> the requested kinds in canonical order (`KINDS`), duplicates
    dropped; an unknown kind or an empty list is an error naming the flag."""
    wanted = [k.strip() for k in text.split(",") if k.strip()]
    for kind in wanted:
        if kind not in KINDS:
            raise PplawError(f"--kinds: unknown kind {kind!r} (choose from {', '.join(KINDS)})")
    if not wanted:
        raise PplawError(f"--kinds: no kinds given (choose from {', '.join(KINDS)})")
    return [k for k in KINDS if k in wanted]


def check_settings(fraction: float, low_share: float, kinds: Sequence[str], has_general: bool, seed: int) -> None:
    """The checks of the settings alone (no data needed), each error naming its flag."""
    if not 0 <= fraction < 1:
        raise PplawError(f"--fraction must be in [0, 1), got {fraction}")
    if not 0 <= low_share <= 1:
        raise PplawError(f"--low-share must be in [0, 1], got {low_share}")
    for kind in kinds:
        if kind not in KINDS:
            raise PplawError(f"--kinds: unknown kind {kind!r} (choose from {', '.join(KINDS)})")
    if not kinds:
        raise PplawError(f"--kinds: no kinds given (choose from {', '.join(KINDS)})")
    if "general" in kinds and not has_general:
        raise PplawError(
            "--general is required when --kinds includes 'general' (a general-domain corpus, "
            "e.g. Project Gutenberg books); or leave 'general' out of --kinds"
        )
    if seed < 0:
        raise PplawError(f"--seed must be >= 0, got {seed}")


def contaminate(
    clean_texts: Sequence[str],
    clean_ids: Sequence[str],
    *,
    fraction: float,
    low_share: float = 0.5,
    kinds: Sequence[str] = KINDS,
    general_texts: Sequence[str] | None = None,
    seed: int = 0,
    text_field: str = "text",
    id_field: str = "id",
) -> tuple[list[dict], dict]:
    """The rows of the contaminated corpus (in output order) and its manifest (without the sources,
    which the caller adds): see the module docstring for the recipe."""
    check_settings(fraction, low_share, list(kinds), general_texts is not None, seed)
    kinds = [k for k in KINDS if k in kinds]
    if len(clean_texts) != len(clean_ids):
        raise ValueError(f"{len(clean_texts)} clean texts but {len(clean_ids)} ids")
    if LABEL_FIELD in (text_field, id_field) or text_field == id_field:
        raise PplawError(
            f"--text-field {text_field!r} and --id-field {id_field!r} must differ from each "
            f"other and from {LABEL_FIELD!r} (the label field)"
        )
    if not clean_texts:
        raise PplawError("--data: the clean corpus has no documents")
    sources = [i for i, t in enumerate(clean_texts) if t.strip()]
    if not sources:
        raise PplawError("--data: every document of the clean corpus is empty or whitespace")
    n_clean = len(clean_texts)
    n_junk = round(fraction * n_clean / (1 - fraction))
    low = [k for k in LOW_KINDS if k in kinds]
    high = [k for k in HIGH_KINDS if k in kinds]
    note = None
    if low and high:
        n_low = round(low_share * n_junk)
    elif low:
        n_low = n_junk
        note = f"no high-perplexity kinds requested: their share ({1 - low_share:g}) went to the low class"
    else:
        n_low = 0
        note = f"no low-perplexity kinds requested: their share ({low_share:g}) went to the high class"
    plan = [low[i % len(low)] for i in range(n_low)] + [high[i % len(high)] for i in range(n_junk - n_low)]
    general = None
    if "general" in plan:
        assert general_texts is not None  # check_settings refused 'general' without a general corpus
        general = [t for t in general_texts if t.strip()]
        if not general:
            raise PplawError("--general: every document of the general corpus is empty or whitespace")

    taken = set(clean_ids)
    junk_rows: list[dict] = []
    index = {k: 0 for k in KINDS}
    for kind in plan:
        k = index[kind]
        index[kind] += 1
        doc_id = f"junk-{kind}-{k}"
        if doc_id in taken:
            raise PplawError(
                f"--data: clean document id {doc_id!r} collides with a junk id "
                "(junk-<kind>-<k>); rename it or pass another --id-field"
            )
        rng = np.random.default_rng([seed, _STREAM_JUNK, KINDS.index(kind), k])
        source = sources[int(rng.integers(len(sources)))]
        text = _make_junk(kind, clean_texts[source], rng, general)
        junk_rows.append({id_field: doc_id, text_field: text, LABEL_FIELD: kind})
    clean_rows = [{id_field: i, text_field: t, LABEL_FIELD: CLEAN} for i, t in zip(clean_ids, clean_texts)]
    everything = clean_rows + junk_rows
    order = np.random.default_rng([seed, _STREAM_ORDER]).permutation(len(everything))
    rows = [everything[i] for i in order]

    counts = {CLEAN: {"documents": n_clean, "characters": sum(len(t) for t in clean_texts)}}
    for kind in kinds:
        texts = [r[text_field] for r in junk_rows if r[LABEL_FIELD] == kind]
        counts[kind] = {"documents": len(texts), "characters": sum(len(t) for t in texts)}
    junk_chars = sum(c["characters"] for k, c in counts.items() if k != CLEAN)
    total_chars = counts[CLEAN]["characters"] + junk_chars
    manifest = {
        "version": VERSION,
        "recipe": {
            "fraction": fraction,
            "low_share": low_share,
            "kinds": list(kinds),
            "seed": seed,
            "garble_rate": GARBLE_RATE,
            "text_field": text_field,
            "id_field": id_field,
            "label_field": LABEL_FIELD,
        },
        "kind_class": {k: KIND_CLASS[k] for k in kinds},
        "classes": {"low": {"kinds": low, "documents": n_low}, "high": {"kinds": high, "documents": n_junk - n_low}},
        "class_note": note,
        "counts": counts,
        "documents": {"clean": n_clean, "junk": n_junk, "total": n_clean + n_junk},
        "characters": {"clean": counts[CLEAN]["characters"], "junk": junk_chars, "total": total_chars},
        "junk_fraction_documents": n_junk / (n_clean + n_junk),
        "junk_fraction_characters": junk_chars / total_chars if total_chars else 0.0,
    }
    return rows, manifest


def _make_junk(kind: str, source: str, rng: np.random.Generator, general: Sequence[str] | None) -> str:
    length = len(source)
    if kind == "general":
        assert general is not None  # contaminate keeps the general texts whenever 'general' is planned
        return general_window(general[int(rng.integers(len(general)))], length, rng)
    if kind == "boilerplate":
        return boilerplate(length, rng)
    if kind == "garbled":
        return garble(source, rng)
    if kind == "shuffled":
        return shuffle_words(source, rng)
    if kind == "table":
        return table(length, rng)
    raise AssertionError(kind)


def general_window(text: str, length: int, rng: np.random.Generator) -> str:
    """A window of `length` characters of `text` at a random position, moved back to a word start."""
    if len(text) <= length:
        return text
    start = int(rng.integers(0, len(text) - length + 1))
    cut = max(text.rfind(" ", max(0, start - 100), start), text.rfind("\n", max(0, start - 100), start))
    if cut >= 0:
        start = cut + 1
    return text[start : start + length]


def _fill(template: str, rng: np.random.Generator) -> str:
    def date() -> str:
        return datetime.date.fromordinal(_DATE_FIRST + int(rng.integers(_DATE_SPAN))).strftime("%B %d, %Y")

    values = {
        "name": f"Dr. {_NAMES[int(rng.integers(len(_NAMES)))]}",
        "site": _SITES[int(rng.integers(len(_SITES)))],
        "street": f"{int(rng.integers(1, 999))} {_STREETS[int(rng.integers(len(_STREETS)))]}",
        "phone": f"{int(rng.integers(200, 999))}-{int(rng.integers(200, 999))}-{int(rng.integers(10**4)):04d}",
        "ref": f"REG-{int(rng.integers(10**6)):06d}",
        "room": str(int(rng.integers(2, 40))),
        "days": str(int(rng.integers(2, 15))),
        "count": str(int(rng.integers(3, 900))),
        "date": date(),
        "date2": date(),
        "date3": date(),
    }
    return template.format(**values)


def boilerplate(length: int, rng: np.random.Generator) -> str:
    """Filled `BOILERPLATE` paragraphs joined by blank lines, cut back to a word boundary at most
    `length` characters (at least one word)."""
    text = ""
    while len(text) < length:
        paragraph = _fill(BOILERPLATE[int(rng.integers(len(BOILERPLATE)))], rng)
        text = paragraph if not text else text + "\n\n" + paragraph
    if len(text) > length:
        cut = max(text.rfind(" ", 0, length + 1), text.rfind("\n", 0, length + 1))
        text = text[:cut].rstrip() if cut > 0 else text[:length]
    return text


def garble(text: str, rng: np.random.Generator, rate: float = GARBLE_RATE) -> str:
    """OCR-like corruption of about `rate` of the characters (see the module docstring)."""
    u = rng.random(len(text))
    noise = rng.integers(len(NOISE_CHARS), size=len(text))
    out: list[str] = []
    previous = ""
    for ch, r, n in zip(text, u.tolist(), noise.tolist()):
        if r >= rate:
            out.append(ch)
        else:
            r /= rate
            c = NOISE_CHARS[n]
            if c == ch:
                c = NOISE_CHARS[(n + 1) % len(NOISE_CHARS)]
            if r < 0.5:  # substitute
                out.append(c)
            elif r < 0.7:  # delete
                pass
            elif r < 0.85:  # insert a random character
                out.append(c)
                out.append(ch)
            elif ch.isalnum() and previous.isalnum():  # split a word
                out.append(" ")
                out.append(ch)
            else:
                out.append(c)
        previous = ch
    return "".join(out)


def shuffle_words(text: str, rng: np.random.Generator) -> str:
    """The whitespace-separated words of `text` in a random order, joined by single spaces."""
    words = text.split()
    return " ".join(words[i] for i in rng.permutation(len(words)))


def _table_row(rng: np.random.Generator) -> str:
    date = datetime.date.fromordinal(_DATE_FIRST + int(rng.integers(_DATE_SPAN)))
    lot = f"{int(rng.integers(16**4)):04X}-{int(rng.integers(100)):02d}"
    return (
        f"NCT{int(rng.integers(10**8)):08d} | {rng.uniform(0, 100):.1f} | {rng.uniform(0, 1):.3f} | "
        f"{lot} | {date.isoformat()}"
    )


def table(length: int, rng: np.random.Generator) -> str:
    """`TABLE_HEADER` and as many whole random rows as fit in `length` characters (at least one)."""
    lines = [TABLE_HEADER, _table_row(rng)]
    size = len(lines[0]) + 1 + len(lines[1])
    while True:
        row = _table_row(rng)
        if size + 1 + len(row) > length:
            break
        lines.append(row)
        size += 1 + len(row)
    return "\n".join(lines)


def clean_doc_ids(spec: str, id_field: str = "id") -> set[str]:
    """Ids of the documents a contaminated corpus labels clean (``"junk": "none"``): the planted
    labels, which only the oracle baseline may see.  Read with the corpus reader, the label field
    taken as the text (so a missing label is an error naming the file and line)."""
    from pplaw_jax.data import iter_documents

    return {doc.doc_id for doc in iter_documents(spec, text_field=LABEL_FIELD, id_field=id_field) if doc.text == CLEAN}
