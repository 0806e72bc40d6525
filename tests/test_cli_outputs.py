"""Every subcommand checks its --out before any work: an existing file where a directory is
expected (or the reverse), or a path below a file, is one rc-2 line naming --out, and nothing is
written. (Unwritable directories are checked with os.access too, but root, as CI runs, may write
anywhere, so that case is not asserted here.)"""

import pytest

from pplaw_jax.cli import main

# the other arguments name inputs that do not exist: the --out check must come first
COMMANDS = [
    ["score", "--model", "NOPE", "--data", "NOPE.jsonl"],
    ["fit", "--runs", "NOPE.csv"],
    ["select", "--landscape", "NOPE", "--tokens", "100", "--method", "random"],
    ["select", "design", "--landscape", "NOPE", "--n", "6", "--budgets", "1", "20"],
    ["propose", "--fit", "NOPE", "--landscape", "NOPE", "--n", "2", "--tokens", "100"],
    ["train", "--model", "NOPE", "--data", "NOPE.jsonl"],
]
FILE_COMMANDS = [
    ["eval", "--model", "NOPE", "--tasks", "NOPE.jsonl"],
    ["predict", "--fit", "NOPE", "--mu", "1", "--sigma", "1", "--tokens", "10"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_a_file_where_an_output_directory_goes_is_refused_first(tmp_path, capsys, argv):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    assert main([*argv, "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert f"--out {taken}: exists and is not a directory" in err and len(err.strip().splitlines()) == 1
    assert main([*argv, "--out", str(taken / "below")]) == 2
    assert f"{taken} is not a directory" in capsys.readouterr().err
    assert taken.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize("argv", FILE_COMMANDS, ids=lambda a: a[0])
def test_a_directory_where_an_output_file_goes_is_refused_first(tmp_path, capsys, argv):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path}: is a directory" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
