"""The runs table (`pplaw runs`): what each row records."""

from pplaw_jax.cli import main


def test_the_runs_table_records_what_was_trained(tmp_path):
    """`tokens` (the law's D) is what the run trained on; the selection's size is kept beside it.
    A run of two epochs of its subset trains twice the subset's tokens."""
    import json

    import pandas as pd

    run = tmp_path / "two_epochs"
    run.mkdir()
    (run / "eval.json").write_text(
        json.dumps(
            {
                "domain_loss": 3.0,
                "tokens": 5843,
                "trained_tokens": 11686,
                "mu_ppl": 5.0,
                "sigma_ppl": 1.0,
                "mu_logppl": 1.5,
                "sigma_logppl": 0.2,
            }
        )
    )
    assert main(["runs", "--run", f"g1={run}", "--out", str(tmp_path / "runs.csv")]) == 0
    row = pd.read_csv(tmp_path / "runs.csv").iloc[0]
    assert (row["tokens"], row["subset_tokens"], row["run_id"], row["group"]) == (11686, 5843, "two_epochs", "g1")
