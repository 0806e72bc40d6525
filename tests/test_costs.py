"""The report's time table: wall time per stage from commands.log's start stamps, training runs and
tokens from their eval.json, on a study directory written here with known numbers."""

import json

from pplaw_jax.costs import cost_lines, study_costs, work_rows

LOG = """pplaw data cut --data a.jsonl --out data/valid.jsonl  # 2026-12-06 10:00:00
pplaw score --model m --data a.jsonl --out landscape  # 2026-12-06 10:00:30
pplaw select design --landscape landscape --out grid/selections --n 4  # 2026-12-06 10:02:30
pplaw train --model m --data a.jsonl --out grid/runs/p0  # 2026-12-06 10:02:40
pplaw fit --runs grid/runs.csv --out fit  # 2026-12-06 10:06:40
pplaw train --model m --data a.jsonl --out final/random/seed0  # 2026-12-06 10:08:40
pplaw report .  # 2026-12-06 10:10:00
"""


def test_costs_of_a_study(tmp_path):
    (tmp_path / "commands.log").write_text(LOG)
    for run, tokens, wall in (("grid/runs/p0", 1000, 200.0), ("final/random/seed0", 4000, 60.0)):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "eval.json").write_text(json.dumps({"trained_tokens": tokens, "wall_time_s": wall}))
    costs = study_costs(tmp_path)
    assert costs["wall_s"] == 600.0
    assert costs["stages"] == {"data": 30.0, "landscape": 120.0, "grid": 250.0, "fit": 120.0, "final": 80.0}
    assert (costs["runs"], costs["tokens"], costs["train_loop_s"]) == (2, 5000, 260.0)
    text = "\n".join(cost_lines(tmp_path))
    assert "10.0 min of wall time" in text and "trained 5,000 tokens in 4.3 min" in text and "43% of the study" in text
    assert "| grid | 4.2 min | 42% |" in text
    assert "By kind of work" not in text  # runs without their seconds: no table by kind of work


def test_time_by_kind_of_work(tmp_path):
    """The runs' own seconds by kind, what of their commands' wall time no section counts, the
    commands that are one kind of work (fit, score, eval), and the rest of the study."""
    (tmp_path / "commands.log").write_text(LOG)
    for run, seconds in (
        ("grid/runs/p0", {"train": 120.0, "eval": 30.0, "compile": 20.0, "load": 10.0, "checkpoint": 5.0}),
        ("final/random/seed0", {"train": 50.0, "eval": 10.0, "compile": 5.0, "load": 5.0, "export": 1.0}),
    ):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "eval.json").write_text(json.dumps({"trained_tokens": 1, "seconds": seconds}))
    costs = study_costs(tmp_path)
    assert costs["commands"] == {"data": 30.0, "score": 120.0, "select": 10.0, "train": 320.0, "fit": 120.0}
    rows = dict(work_rows(costs))
    assert rows["training runs: training steps"] == 170.0 and rows["training runs: compilation"] == 25.0
    assert rows["training runs: checkpoints"] == 5.0 and rows["training runs: HF export"] == 1.0
    assert rows["training runs: start-up and the rest of `pplaw train`"] == 320.0 - 256.0
    assert rows["law fits (`pplaw fit`)"] == 120.0 and rows["scoring (`pplaw score`)"] == 120.0
    assert rows["downstream evaluation (`pplaw eval`)"] == 0.0
    assert rows["everything else (data, design, selection, tables, report)"] == 40.0  # data 30 + select 10
    assert sum(rows.values()) == costs["wall_s"] == 600.0
    assert "| training runs: training steps | 2.8 min | 28% |" in "\n".join(cost_lines(tmp_path))
