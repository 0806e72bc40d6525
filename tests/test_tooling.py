"""The repository passes its lint, format and type checks (configured in pyproject.toml; the same
hooks as .pre-commit-config.yaml), so CI fails on a change that breaks them."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "check",
    [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_repository_passes(check):
    done = subprocess.run([sys.executable, "-m", *check], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(check)} failed:\n{done.stdout[-4000:]}{done.stderr[-2000:]}"
