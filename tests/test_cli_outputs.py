"""Every subcommand checks its --out before any work: an existing file where a directory is
expected (or the reverse), or a path below a file, is one rc-2 line naming --out, and nothing is
written. (Unwritable directories are checked with os.access too, but root, as CI runs, may write
anywhere, so that case is not asserted here.)"""

import dataclasses
import json

import pytest

from pplaw_jax.cli import main

# the other arguments name inputs that do not exist: the --out check must come first
COMMANDS = [
    ["score", "--model", "NOPE", "--data", "NOPE.jsonl"],
    ["fit", "--moments", "ppl", "--runs", "NOPE.csv"],
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


LOCKING = [
    *COMMANDS,
    [
        "run",
        "experiments/configs/quickstart.yaml",
        "data.builtin=null",
        "data.domain_train=NOPE.jsonl",
        "data.domain_test=NOPE.jsonl",
    ],
]


def _out_args(argv, out):
    return [*argv, f"out_dir={out}"] if argv[0] == "run" else [*argv, "--out", str(out)]


def test_a_second_writer_of_an_output_directory_is_refused(tmp_path, capsys):
    """Two commands writing one directory interleave their files (two concurrent `score` runs
    into one --out crashed on each other's temporary files and left a stale .failed marker).
    A writer holds an advisory lock on its --out (a real second process here, as in practice);
    a second one is refused with one rc-2 line naming the directory and the holder's pid, before
    it reads any input (the inputs here do not exist)."""
    import subprocess
    import sys

    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pplaw_jax.fileio import output_lock\n"
            f"with output_lock({str(out)!r}):\n    print('locked', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        for argv in LOCKING:
            assert main(_out_args(argv, out)) == 2, argv
            err = capsys.readouterr().err
            assert f"{out}: another pplaw process (pid {holder.pid}) is writing this directory" in err, (argv, err)
            assert len(err.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the lock with the holder (kill -9), whose lock file remains: the next
    # writer takes it, fails only on its missing input, and removes the file on its way out
    assert [p.name for p in out.iterdir()] == [".pplaw-lock-host000"]
    assert main(_out_args(LOCKING[2], out)) == 2
    assert "another pplaw process" not in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_a_refused_command_leaves_no_output_directory_behind(tmp_path, capsys):
    for argv in LOCKING:
        out = tmp_path / "new"
        assert main(_out_args(argv, out)) == 2, argv
        assert not out.exists(), argv
        capsys.readouterr()


def test_every_help_ends_with_an_example_and_loads_without_jax():
    """`pplaw CMD --help` is read before anything runs: it must be quick (no JAX import) and end
    with a runnable example. Checked in a fresh interpreter (this one has imported JAX)."""
    import subprocess
    import sys

    from pplaw_jax.cli import COMMANDS

    script = (
        "import contextlib, io, sys\n"
        "from pplaw_jax.cli import main\n"
        f"for name in {list(COMMANDS)!r}:\n"
        "    buf = io.StringIO()\n"
        "    with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n"
        "        main([name, '--help'])\n"
        "    print(name, 'jax' in sys.modules, buf.getvalue().strip().splitlines()[-1].strip().split()[:2])\n"
    )
    lines = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert lines == [f"{name} False ['pplaw', '{name}']" for name in COMMANDS]
    version = subprocess.run([sys.executable, "-m", "pplaw_jax.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.strip().startswith("pplaw 0.")


def test_every_output_directory_records_the_command_and_its_resolved_settings(tmp_path):
    """`OUT/command.json`: the command line and every setting (defaults included) it ran with."""
    from pplaw_jax.config import DesignConfig
    from pplaw_jax.select.synthetic import synthetic_landscape, write_landscape

    land = write_landscape(tmp_path / "land", synthetic_landscape(400, seed=0), rows_per_part=200)
    argv = [
        "select",
        "design",
        "--landscape",
        str(land),
        "--out",
        str(tmp_path / "d"),
        "--n",
        "6",
        "--budgets",
        "1e4",
        "4e4",
        "1.6e5",
    ]
    assert main(argv) == 0
    record = json.loads((tmp_path / "d" / "command.json").read_text())
    assert record["argv"] == ["pplaw", *argv]
    assert record["settings"] == {"design": {**dataclasses.asdict(DesignConfig()), "n": 6}}
    assert not (land / "command.json").exists()  # an input is not an output


def test_train_tokens_accepts_scientific_notation(tmp_path, capsys):
    """`--tokens 1e6` works in every subcommand (train took only integers); a bad value is one line."""
    assert (
        main(["train", "--model", "NOPE", "--data", "NOPE.jsonl", "--tokens", "2.5", "--out", str(tmp_path / "r")]) == 2
    )
    assert "--tokens: the token budget must be a whole number of tokens, got '2.5'" in capsys.readouterr().err
    from pplaw_jax.cli import build_parser

    argv = ["train", "--model", "m", "--data", "d", "--out", "o", "--tokens", "1e6"]
    assert build_parser(argv)[0].parse_args(argv).tokens == 1_000_000


def test_a_rerun_removes_what_a_killed_writer_left(tmp_path, capsys):
    """A `pplaw fit` killed while saving a figure left `surface.png.<random>.tmp` in its directory
    for good (found by the fault-injection suite). The next writer of a directory, holding its
    lock, removes such temporaries and staging directories before it starts."""
    from pplaw_jax.select.synthetic import synthetic_landscape, write_landscape

    land = write_landscape(tmp_path / "land", synthetic_landscape(200, seed=0), rows_per_part=100)
    out = tmp_path / "sel"
    (out / ".hf.tmp-abc12_yz").mkdir(parents=True)
    (out / ".hf.tmp-abc12_yz" / "model.safetensors").write_bytes(b"partial")
    (out / "surface.png.lznjjqzn.tmp").write_bytes(b"partial")
    for mine in ("keep.tmp", "notes.v2.tmp"):  # a user's files, not temporaries of ours
        (out / mine).write_text("keep")
    assert main(["select", "--landscape", str(land), "--tokens", "1000", "--method", "random", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "command.json",
        "keep.tmp",
        "notes.v2.tmp",
        "selection.parquet",
        "summary.json",
    ]


def test_owned_temporaries_only(tmp_path):
    """Multi-host commands (score, train) and `pplaw run` clean only the temporaries of the files
    their process alone writes: another host's in-flight `run_args.json.<random>.tmp` must stay."""
    from pplaw_jax.fileio import discard_temporaries

    for name in (
        "summary.json.k3j9x2ab.tmp",
        "histogram.png.q1w2e3r4.tmp",
        "run_args.json.abcdefgh.tmp",
        "parts/host001-part00000.parquet.zzzzzzzz.tmp",
    ):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("partial")
    (tmp_path / ".hf.tmp-abcd_123").mkdir()
    discard_temporaries(tmp_path, owned=("summary.json", "histogram.png", "hf"))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "parts/host001-part00000.parquet.zzzzzzzz.tmp",
        "run_args.json.abcdefgh.tmp",
    ]
    assert not (tmp_path / ".hf.tmp-abcd_123").exists()


def test_sigint_is_one_line_and_the_shells_code(monkeypatch, tmp_path, capsys):
    """Ctrl-C during a command: no traceback, rc 130 (what a shell reports for SIGINT)."""
    import pplaw_jax.fit.cli as fit_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit_cli, "run", interrupted)
    assert main(["fit", "--runs", str(tmp_path / "r.csv"), "--out", str(tmp_path / "f")]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "pplaw fit: interrupted; run the same command again to resume"


def test_run_overrides_may_follow_its_flags():
    from pplaw_jax.run_cli import reorder_argv

    assert reorder_argv(["run", "c.yaml", "--until", "fit", "fit.law=ppl", "--force", "grid", "seed=1"]) == [
        "run",
        "c.yaml",
        "fit.law=ppl",
        "seed=1",
        "--until",
        "fit",
        "--force",
        "grid",
    ]
    assert reorder_argv(["run", "c.yaml", "a=1", "--force=fit"]) == ["run", "c.yaml", "a=1", "--force=fit"]
