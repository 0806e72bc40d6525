"""The control studies' pre-registered verdicts (report.control_verdicts): P1, P2, P3 from final
runs paired by seed, a refusal never passing P2."""

import numpy as np
import pandas as pd

from pplaw_jax.report import control_verdicts

SEEDS = range(5)


def final(**means):
    """Final runs of each method (domain loss): the method's mean plus a per-seed shift shared by
    every method (what pairing by seed removes) plus a little noise of its own."""
    rng = np.random.default_rng(0)
    shift = rng.normal(0, 0.05, len(SEEDS))
    rows = [
        dict(method=m, seed=s, domain_loss=mean + shift[s] + rng.normal(0, 0.002))
        for m, mean in means.items()
        for s in SEEDS
    ]
    return pd.DataFrame(rows)


def verdicts(frame, fraction=0.3, refused=(), mde=0.02):
    return "\n".join(control_verdicts(frame, "domain_loss", fraction, mde, 0.5, set(refused)))


def test_positive_control_and_a_method_that_works():
    text = verdicts(final(random=4.66, oracle=4.50, band=4.60, **{"dos-posterior": 4.53}))
    assert "P1 (positive control: the planted junk matters) holds" in text
    assert "P2 (the method works) holds" in text and "falsified" not in text


def test_a_method_that_does_not_find_the_junk_is_falsified():
    text = verdicts(final(random=4.66, oracle=4.50, band=4.60, **{"dos-posterior": 4.655}))
    assert "P1 (positive control: the planted junk matters) holds" in text
    assert "P2 (the method works) fails" in text and "the method is falsified in this setting" in text


def test_a_refusal_fails_p2_and_states_its_cost():
    text = verdicts(final(random=4.66, oracle=4.50, band=4.60), refused={"dos-posterior"})
    assert "P2 (the method works) fails: DOS refused" in text and "left the oracle's gain on the table (0.16" in text


def test_junk_that_does_not_matter_fails_p1():
    text = verdicts(final(random=4.66, oracle=4.65, band=4.66, **{"dos-posterior": 4.66}))
    assert "P1 (positive control: the planted junk matters) fails" in text and "falsified" not in text


def test_negative_control():
    assert "P3 (negative control: no false claim) holds" in verdicts(
        final(random=4.66, band=4.66, **{"dos-posterior": 4.661}), fraction=0.0
    )
    assert "P3 (negative control: no false claim) fails" in verdicts(
        final(random=4.66, band=4.66, **{"dos-posterior": 4.60}), fraction=0.0
    )
    assert "P3 (negative control: no false claim) holds" in verdicts(
        final(random=4.66, band=4.66), fraction=0.0, refused={"dos-posterior"}
    )
