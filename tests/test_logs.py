"""Logging: periodic progress lines when stderr is not a terminal, and a host prefix on multi-host runs."""

import logging

import jax

import pplaw_jax.distributed as distributed
from pplaw_jax import logs


def test_progress_is_log_lines_when_stderr_is_not_a_terminal(monkeypatch, capsys):
    """In a batch job's log file a tqdm bar is thousands of carriage returns; there it becomes one
    line per PPLAW_PROGRESS_SECONDS and one at the end, with the count, rate and postfix."""
    logs.setup("INFO")
    monkeypatch.setenv("PPLAW_PROGRESS_SECONDS", "3600")
    with logs.progress("train", total=5, unit="step", initial=1) as bar:
        for _ in range(4):
            bar.update(1)
            bar.set_postfix(loss="1.2345", refresh=False)  # tqdm's redraw flag is not a value to log
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # nothing until the period elapsed, then the closing line
    assert "pplaw.progress: train: 5/5 step (" in lines[0] and lines[0].endswith("step/s), loss=1.2345")

    monkeypatch.setenv("PPLAW_PROGRESS_SECONDS", "0")
    with logs.progress("score host 0", unit="doc") as bar:
        bar.update(2)
        bar.update(3)
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines] == [
        "score host 0: 2 doc",
        "score host 0: 5 doc",
        "score host 0: 5 doc",
    ]
    with logs.progress("eval", total=3, disable=True) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_multi_host_records_carry_the_host(monkeypatch, capsys):
    logs.setup("INFO")
    logs.get_logger("score").info("single host")
    monkeypatch.setattr(distributed, "_initialized", True)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    monkeypatch.setattr(jax, "process_count", lambda: 4)
    logs.get_logger("score").info("one of four")
    logs.get_logger("score").debug("hidden at INFO")
    first, second = capsys.readouterr().err.strip().splitlines()
    assert first.endswith("pplaw.score: single host")
    assert second.endswith("pplaw.score [host 1/4]: one of four")
    assert logging.getLogger("pplaw").level == logging.INFO
