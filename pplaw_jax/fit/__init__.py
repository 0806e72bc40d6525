"""The fit stage: runs.csv -> fit directory (``pplaw fit``), predictions from a fit directory
(``pplaw predict``) and the runs table from finished CPT runs (``pplaw runs``).  The numerics it
runs are `pplaw_jax.law`; this package reads and writes the files.

* `runs_table`: the runs.csv contract (columns, `collect_runs`/`write_runs_table`, `read_runs`).
* `fitdir`: the fit directory contract (file names, fit.json format, `write_posterior`,
  `write_fit_json`, `Fit`, `load_fit`).
* `stage`: `fit_to_dir`, the whole ``pplaw fit``; `plots`: its figures.
* `cli`, `predict_cli`, `runs_cli`: the commands.

Public API (other stages code against these):

* ``load_fit(fit_dir) -> Fit``: open a directory written by ``pplaw fit``. ``Fit.law``,
  ``Fit.point_params`` (``{name: float}``), ``Fit.posterior_draws()`` (``{name: draws[S]}`` or None),
  ``Fit.noise_draws()``.
* ``predict_table(fit, mu, sigma, tokens, level)``: point prediction plus credible and predictive
  intervals as a DataFrame (what ``pplaw predict`` prints).
* ``fit_to_dir``: the fitting stage, for programmatic use.
"""

from pplaw_jax.fit.fitdir import Fit, load_fit
from pplaw_jax.fit.predict_cli import predict_table
from pplaw_jax.fit.stage import NotConverged, fit_to_dir

__all__ = [
    "Fit",
    "NotConverged",
    "fit_to_dir",
    "load_fit",
    "predict_table",
]
