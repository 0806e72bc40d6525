"""Bayesian fit of a law with NumPyro NUTS: model, sampling, diagnostics, InferenceData, LOO.

Model (``z`` = the law's standardised features over the runs, see `point.Design`)::

    log_E   ~ Normal(log_E_loc, log_E_scale)       E > 0; default loc log(0.5 * min loss), scale 1
    c0      ~ Normal(intercept_loc, intercept_scale)  log(L - E) at the runs' mean features;
                                                    default loc log(0.5 * median loss), scale 2.5
    c_j     ~ Normal(0, coef_scale)                 standardised exponents, default scale 2.5:
                                                    one feature-sd moves L - E by up to ~e^5
    c_j     ~ Normal(0, interaction_scale)          the law's `shrunk_exponents` (interaction and
                                                    curvature terms: ppl's alpha1, beta1; quad's
                                                    c_mu2, c_sigma2, c_musigma), default 0.5
    noise   ~ HalfNormal(noise_scale)               sd of log-loss around the law, default 0.1
    log loss_i ~ StudentT(student_df, log L_i, noise)  (default, df 4) or Normal(log L_i, noise)

The Student-t likelihood is the default because the point fit is robust (Huber): with a Normal
likelihood one run far off the law (the positive control's gutenberg-heavy run at the largest
budget) inflated the posterior noise thirty-fold over the Huber fit's scale (0.089 against 0.003),
spreading every parameter and the argmin over the whole supported region.

Priors on *standardised* coefficients are weakly informative whatever the units of mu, sigma and
D (the rstanarm "autoscale" idea); they map linearly and exactly to the public parameters
``Dc, alpha0, ...``, which are what posterior.nc stores.  Every prior constant is overridable
(`Priors`, ``pplaw fit --prior name=value``) and recorded in fit.json.  Interaction and
curvature terms are shrunk towards 0 (scale 0.5 instead of 2.5): with a few design points they are
what lets a law bend through every window, so they must earn their size from the data.  Features
are standardised column by column, so for ``quad``'s uncentred squares and product the
standardised coefficient also carries a linear trend: the prior bounds the whole term, not the
curvature alone.  `prior_predictive` draws log-losses from the priors alone (prior-predictive check).

Sampling: NUTS moves in other coordinates of the same posterior (`sampled_model`: the log-loss at
the runs' centre, the logit of E's share of it and the slopes there, with the Jacobian of the map),
which the runs pin nearly independently: on the cpu_tiny runs every iteration of the model above
ran to the maximum tree depth (977 leapfrog steps per iteration) without converging; in these
coordinates 79 steps, converged (benchmarks/results/fit_stage_speed.md). A dense mass matrix (the
law's features are strongly correlated) and ``target_accept_prob=0.9``.  Chain 0 starts at the
point fit, the others at bootstrap refits of it (over-dispersed but plausible starts, so r_hat
can detect chains that disagree).  The chains are vectorised and the whole run — every chain's
initialisation, warmup adaptation and sampling — is one compiled program (`_nuts_program`): for a
model this small the per-step overhead dominates, so stepping all chains together in one compiled
loop beats running them one by one on CPU even though each step costs the deepest tree among the
chains (measured ~1.5x on 2 cores).

Model comparison (`loo_compare`): PSIS leave-one-group-out.  Each draw's pointwise
log-likelihood is summed over the rows of each run group (all budgets and replicates of one
design point), and ``arviz.loo`` / ``arviz.compare`` run on those group log-likelihoods, so LOO
leaves out whole groups like the held-out error does.

Convergence is enforced: max rank-normalised split r_hat <= ``max_rhat`` (default 1.01, Vehtari et
al. 2021), min bulk ESS >= ``min_ess_per_chain * chains`` (default 100 per chain) and divergent
transitions <= ``max_divergences`` (default 0), over all parameters and ``noise``.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import stats

from pplaw_jax.config import FitConfig
from pplaw_jax.errors import PplawError
from pplaw_jax.law.forms import LAWS, LawForm, log_loss
from pplaw_jax.law.point import Design, PointFit
from pplaw_jax.law.runs import Runs


def import_arviz():
    """ArviZ without its import-time FutureWarning about the coming 1.0 refactor."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz

    return arviz


@dataclass(frozen=True)
class Priors:
    """Prior constants; ``None`` means the data-derived default described in the module doc."""

    log_E_loc: float | None = None
    log_E_scale: float = 1.0
    intercept_loc: float | None = None
    intercept_scale: float = 2.5
    coef_scale: float = 2.5
    interaction_scale: float = 0.5
    noise_scale: float = 0.1

    def resolved(self, runs: Runs) -> Priors:
        """Fill the data-derived defaults from `runs`."""
        return replace(
            self,
            log_E_loc=float(np.log(0.5 * runs.loss.min())) if self.log_E_loc is None else self.log_E_loc,
            intercept_loc=(
                float(np.log(0.5 * np.median(runs.loss))) if self.intercept_loc is None else self.intercept_loc
            ),
        )

    def coef_scales(self, form: LawForm) -> np.ndarray:
        """Prior sd of each standardised exponent of `form`, in feature order."""
        return np.array(
            [self.interaction_scale if n in form.shrunk_exponents else self.coef_scale for n in form.exponent_names]
        )

    @classmethod
    def from_overrides(cls, items: list[str]) -> Priors:
        """Parse ``["name=value", ...]`` (the ``--prior`` option) into Priors."""
        names = {f.name for f in fields(cls)}
        values = {}
        for item in items:
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in names:
                raise PplawError(f"--prior {item!r}: expected NAME=VALUE with NAME in {', '.join(sorted(names))}")
            try:
                values[name] = float(value)
            except ValueError:
                raise PplawError(f"--prior {item!r}: {value!r} is not a number") from None
            if name.endswith("_scale") and not values[name] > 0:
                raise PplawError(f"--prior {item!r}: scales must be > 0")
        return cls(**values)


_FIT = FitConfig()  # the defaults of `pplaw fit`, written once in pplaw_jax.config
PRIOR_SD_RATIO = 0.9  # a parameter whose posterior is this wide, relative to its prior, is not identified


@dataclass(frozen=True)
class SamplerConfig:
    """NUTS settings and convergence thresholds (`FitConfig`'s, plus the seed)."""

    chains: int = _FIT.chains
    warmup: int = _FIT.warmup
    samples: int = _FIT.samples
    seed: int = 0
    likelihood: str = _FIT.likelihood  # or "student"
    student_df: float = _FIT.student_df
    target_accept: float = _FIT.target_accept
    max_rhat: float = _FIT.max_rhat
    min_ess_per_chain: float = _FIT.min_ess
    max_divergences: int = _FIT.max_divergences

    @classmethod
    def from_fit_config(cls, cfg: FitConfig, seed: int) -> SamplerConfig:
        return cls(
            chains=cfg.chains,
            warmup=cfg.warmup,
            samples=cfg.samples,
            seed=seed,
            likelihood=cfg.likelihood,
            student_df=cfg.student_df,
            target_accept=cfg.target_accept,
            max_rhat=cfg.max_rhat,
            min_ess_per_chain=cfg.min_ess,
            max_divergences=cfg.max_divergences,
        )


def numpyro_model(z, y, priors: Priors, coef_scales, likelihood: str, student_df: float):
    """The NumPyro model above; `z` is ``[n, k]`` standardised features (column 0 = 1),
    `coef_scales` the ``k - 1`` prior sds of the exponents (`Priors.coef_scales`), `y` the observed
    log-losses (None: sample them, as the prior predictive does)."""
    import numpyro
    import numpyro.distributions as dist

    log_e = numpyro.sample("log_E", dist.Normal(priors.log_E_loc, priors.log_E_scale))
    c0 = numpyro.sample("c0", dist.Normal(priors.intercept_loc, priors.intercept_scale))
    c = numpyro.sample("c", dist.Normal(0.0, coef_scales).to_event(1))
    _observe(z, y, True, log_e, c0, c, priors.noise_scale, likelihood, student_df)


def _observe(z, y, run_mask, log_e, c0, c, noise_scale, likelihood: str, student_df) -> None:
    """Both models' noise and likelihood: the log-losses of the runs (those in `run_mask`) around
    ``log L = logaddexp(log E, c0 + z c)``."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    noise = numpyro.sample("noise", dist.HalfNormal(noise_scale))
    mean = jnp.logaddexp(log_e, c0 + z[:, 1:] @ c)
    obs = dist.Normal(mean, noise) if likelihood == "normal" else dist.StudentT(student_df, mean, noise)
    with numpyro.plate("runs", z.shape[0]), numpyro.handlers.mask(mask=run_mask):
        numpyro.sample("log_loss", obs, obs=y)


def sampled_model(z, y, run_mask, slot_mask, coef_scales, hyper, likelihood: str):
    """`numpyro_model` in the coordinates NUTS moves in: ``m`` = log L at the runs' mean features,
    ``t = log E - c0`` (the logit of E's share of that loss) and ``s = (1 - E/L) c`` (the slopes
    of log L there). It is the same posterior: `numpyro_model`'s priors on ``(log_E, c0, c)``,
    read at the transformed point, plus the log-Jacobian of the map, ``-(k-1) log sigmoid(-t)``
    (the ``(m, t)`` block has determinant -1). The runs pin ``m`` and ``s`` directly and leave
    ``t`` to the loss curvature and its prior, where in ``(log_E, c0, c)`` every value of E moves
    the intercept and all slopes with it along a curved ridge that NUTS could only follow with
    1,023-step trajectories (benchmarks/results/fit_stage_speed.md).

    Every law is sampled by one compiled kernel per run count (`fit_bayes`): `z` has `SLOTS`
    exponent columns and rows padded to a multiple of `ROW_BLOCK`; `slot_mask` marks the law's
    exponents (a padded slope is a standard normal that touches nothing else, so the law's
    posterior is unchanged), `run_mask` the real runs; the prior constants come as arrays
    (`coef_scales`, ``hyper = [log_E_loc, log_E_scale, intercept_loc, intercept_scale,
    noise_scale, student_df]``), not as constants of the program."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    log_e_loc, log_e_scale, intercept_loc, intercept_scale, noise_scale, student_df = hyper
    m = numpyro.sample("m", dist.ImproperUniform(constraints.real, (), ()))
    t = numpyro.sample("t", dist.ImproperUniform(constraints.real, (), ()))
    s = numpyro.sample("s", dist.ImproperUniform(constraints.real, (), (slot_mask.shape[0],)))
    log_rest = jax.nn.log_sigmoid(-t)  # log(1 - E/L) at the centre
    log_e = numpyro.deterministic("log_E", m + jax.nn.log_sigmoid(t))
    c0 = numpyro.deterministic("c0", m + log_rest)
    c = numpyro.deterministic("c", jnp.where(slot_mask, s * jnp.exp(-log_rest), 0.0))
    slopes = jnp.where(slot_mask, dist.Normal(0.0, coef_scales).log_prob(c), dist.Normal(0.0, 1.0).log_prob(s))
    numpyro.factor(
        "prior",
        dist.Normal(log_e_loc, log_e_scale).log_prob(log_e)
        + dist.Normal(intercept_loc, intercept_scale).log_prob(c0)
        + slopes.sum()
        - slot_mask.sum() * log_rest,
    )
    _observe(z, y, run_mask, log_e, c0, c, noise_scale, likelihood, student_df)


SLOTS = max(form.n_coef for form in LAWS.values()) - 1  # exponent slots of the compiled sampler
ROW_BLOCK = 16  # runs are padded to a multiple of this: a few more runs reuse the compiled kernel


def sampler_inputs(runs: Runs, design: Design, priors: Priors, student_df: float) -> tuple:
    """`sampled_model`'s array arguments for `runs` (`priors` resolved): z, y, run_mask,
    slot_mask, coef_scales, hyper, padded as its docstring says."""
    k = design.form.n_coef
    n = -(-runs.n // ROW_BLOCK) * ROW_BLOCK
    z = np.zeros((n, SLOTS + 1))
    z[: runs.n, :k] = design.z(runs.mu, runs.sigma, runs.tokens)
    y = np.zeros(n)
    y[: runs.n] = np.log(runs.loss)
    scales = np.ones(SLOTS)
    scales[: k - 1] = priors.coef_scales(design.form)
    hyper = [
        priors.log_E_loc,
        priors.log_E_scale,
        priors.intercept_loc,
        priors.intercept_scale,
        priors.noise_scale,
        student_df,
    ]
    return z, y, np.arange(n) < runs.n, np.arange(SLOTS) < k - 1, scales, np.asarray(hyper, dtype=float)


@dataclass
class BayesFit:
    """Posterior of one law: public parameter draws ``[chains, draws]`` plus diagnostics."""

    form: LawForm
    design: Design
    priors: Priors
    config: SamplerConfig
    draws: dict[str, np.ndarray]  # public names + "noise", each [chains, draws]
    sample_stats: dict[str, np.ndarray]
    log_lik: np.ndarray  # [chains, draws, n]
    runs: Runs
    wall_s: float
    chain_method: str

    def flat(self) -> dict[str, np.ndarray]:
        return {k: v.reshape(-1) for k, v in self.draws.items()}

    def to_idata(self):
        """ArviZ InferenceData: posterior (one variable per parameter, and noise), log_likelihood,
        observed_data and constant_data over dimension ``run``, sample_stats."""
        az = import_arviz()
        n = self.runs.n
        return az.from_dict(
            posterior=self.draws,
            sample_stats=self.sample_stats,
            log_likelihood={"log_loss": self.log_lik},
            observed_data={"log_loss": np.log(self.runs.loss)},
            constant_data={
                "mu": self.runs.mu,
                "sigma": self.runs.sigma,
                "tokens": self.runs.tokens,
                "run_id": np.asarray(self.runs.run_ids, dtype=str),
            },
            coords={"run": np.arange(n)},
            dims={"log_loss": ["run"], "mu": ["run"], "sigma": ["run"], "tokens": ["run"], "run_id": ["run"]},
            attrs={"law": self.form.name, "likelihood": self.config.likelihood},
        )

    def diagnostics(self) -> dict:
        """Per-parameter summary and the convergence verdict, as fit.json wants them."""
        az = import_arviz()
        names = list(self.form.param_names) + ["noise"]
        post = az.from_dict(posterior={k: self.draws[k] for k in names}).posterior
        quantiles = {f"q{round(100 * q):02d}": (lambda x, q=q: np.quantile(x, q)) for q in (0.05, 0.5, 0.95)}
        table = az.summary(post, var_names=names, round_to="none", stat_funcs=quantiles, extend=True)
        columns = ("mean", "sd", "q05", "q50", "q95", "r_hat", "ess_bulk", "ess_tail")
        summary = {k: {c: float(table.loc[k, c]) for c in columns} for k in names}
        cfg = self.config
        n_div = int(self.sample_stats["diverging"].sum())
        max_rhat = max(s["r_hat"] for s in summary.values())
        min_ess = min(s["ess_bulk"] for s in summary.values())
        ess_floor = cfg.min_ess_per_chain * cfg.chains
        problems = []
        if not max_rhat <= cfg.max_rhat:
            worst = max(summary, key=lambda k: summary[k]["r_hat"])
            problems.append(f"max r_hat {max_rhat:.4f} > {cfg.max_rhat} (worst: {worst})")
        if not min_ess >= ess_floor:
            worst = min(summary, key=lambda k: summary[k]["ess_bulk"])
            problems.append(f"min bulk ESS {min_ess:.0f} < {ess_floor:.0f} (worst: {worst})")
        if n_div > cfg.max_divergences:
            problems.append(f"{n_div} divergent transitions > {cfg.max_divergences}")
        return {
            "summary": summary,
            "divergences": n_div,
            "max_r_hat": max_rhat,
            "min_ess_bulk": min_ess,
            "thresholds": {
                "max_r_hat": cfg.max_rhat,
                "min_ess_bulk": ess_floor,
                "max_divergences": cfg.max_divergences,
            },
            "converged": not problems,
            "problems": problems,
        }

    def identified(self) -> dict[str, bool]:
        """Whether the data moved each parameter: its posterior sd, in the sampler's coordinates
        (log E, the standardised intercept and coefficients), is below `PRIOR_SD_RATIO` of its prior
        sd.  A posterior as wide as the prior is the prior speaking, not the runs: not identified."""
        flat = self.flat()
        u = self.design.u_from_params({k: flat[k] for k in self.form.param_names})  # [S, 1 + k]
        prior_sd = np.concatenate(
            [[self.priors.log_E_scale, self.priors.intercept_scale], self.priors.coef_scales(self.form)]
        )
        ratio = u.std(axis=0) / prior_sd
        return {name: bool(r < PRIOR_SD_RATIO) for name, r in zip(self.form.param_names, ratio)}

    def to_json(self) -> dict:
        cfg = self.config
        out = self.diagnostics()
        out.update(
            {
                "identified": self.identified(),
                "identified_rule": f"posterior sd below {PRIOR_SD_RATIO:g} x the prior sd in the sampler's "
                "coordinates (log E, standardised coefficients)",
                "likelihood": cfg.likelihood,
                "student_df": cfg.student_df if cfg.likelihood == "student" else None,
                "priors": asdict(self.priors),
                "interaction_prior_on": list(self.form.shrunk_exponents),
                "prior_space": "log_E, standardised coefficients c (see design)",
                "design": self.design.to_json(),
                "chains": cfg.chains,
                "warmup": cfg.warmup,
                "samples": cfg.samples,
                "seed": cfg.seed,
                "target_accept": cfg.target_accept,
                "chain_method": self.chain_method,
                "wall_s": self.wall_s,
            }
        )
        return out


def centred(u: np.ndarray) -> dict[str, np.ndarray]:
    """`sampled_model`'s coordinates ``m, t, s`` of internal ``u = (log E, c0, c)`` (leading axes
    kept): ``m = log(E + e^c0)``, ``t = log E - c0``, ``s = c / (1 + e^t)``."""
    t = u[..., 0] - u[..., 1]
    return {"m": np.logaddexp(u[..., 0], u[..., 1]), "t": t, "s": u[..., 2:] / (1 + np.exp(t))[..., None]}


def uncentred(m: np.ndarray, t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """`centred`'s inverse, in float64: internal ``u = (log E, c0, c)`` of sampled ``m, t, s``
    (leading axes kept): ``log E = m + log sigmoid(t)``, ``c0 = m + log sigmoid(-t)``,
    ``c = s (1 + e^t)``."""
    log_rest = -np.logaddexp(0.0, t)  # log sigmoid(-t)
    return np.concatenate(
        [(m + t + log_rest)[..., None], (m + log_rest)[..., None], s * np.exp(-log_rest)[..., None]], axis=-1
    )


def _init_params(point: PointFit, chains: int, rng: np.random.Generator, priors: Priors) -> dict:
    """Unconstrained per-chain starts: the point fit, then bootstrap refits (or jittered copies).
    A fit with E at 0 (log E of -1000 where the runs cannot tell E from 0) starts at E four prior
    sds below the prior's centre instead: a chain started far out in the prior's tail never moved
    (the rival `nointer` on the cpu_tiny runs), and E that small changes no prediction."""
    assert priors.log_E_loc is not None  # resolved
    us = [point.u]
    boot = point.bootstrap_u
    if boot is not None and len(boot):
        us += [boot[i] for i in rng.choice(len(boot), size=chains - 1, replace=len(boot) < chains - 1)]
    else:
        us += [point.u + rng.normal(0, 0.05, size=point.u.shape) for _ in range(chains - 1)]
    u = np.stack(us[:chains])
    u[:, 0] = np.maximum(u[:, 0], priors.log_E_loc - 4 * priors.log_E_scale)
    noise = max(point.residual_scale, 1e-3)
    start = centred(u)
    start["s"] = np.pad(start["s"], ((0, 0), (0, SLOTS - start["s"].shape[1])))  # padded slopes at 0
    # noise: the unconstrained value of a positive site
    return {**start, "noise": np.full(chains, np.log(noise))}


def pointwise_log_lik(form, draws_flat, runs: Runs, likelihood: str, student_df: float) -> np.ndarray:
    """``log p(log loss_i | draw s)`` as ``[S, n]`` in float64, from public parameter draws."""
    log_e, theta = form.from_params({k: draws_flat[k] for k in form.param_names})
    mean = log_loss(form, log_e[:, None], theta[:, None, :], runs.mu, runs.sigma, runs.tokens, np)
    scale = draws_flat["noise"][:, None]
    y = np.log(runs.loss)[None, :]
    if likelihood == "normal":
        return stats.norm.logpdf(y, mean, scale)
    return stats.t.logpdf(y, student_df, mean, scale)


_PROGRAMS: dict[tuple, Any] = {}  # sampler settings -> the jitted NUTS program, reused by every fit
_PROGRAMS_LOCK = threading.Lock()  # `fit_bayes_laws` asks for programs from several threads


def _nuts_program(config: SamplerConfig):
    """One jitted program per sampler setting for the whole process: every chain's NUTS
    initialisation, warmup adaptation (step size, dense mass matrix) and sampling, vectorised over
    the chains (`jax.vmap`: they step together, each step costing the deepest tree among them) and
    compiled as one XLA program. (NumPyro's `MCMC` runs the set-up of vectorised chains op by op:
    some 260 small compilations, about 20 s of a process's first fit on a cold cache.) The model's
    arrays are arguments, so every law and runs table of the same padded size runs the program
    compiled for the first (a study fits up to six laws per round, the simulator hundreds), and
    JAX's persistent cache, where configured, keeps it for the next process. Returns
    ``program(rng_keys [chains], init {site: [chains, ...]}, model_args) -> (z, extra)`` with the
    post-warmup draws of the unconstrained sites and NUTS's per-draw statistics."""
    key = (config.likelihood, config.target_accept, config.warmup, config.samples)
    with _PROGRAMS_LOCK:
        if key not in _PROGRAMS:
            _PROGRAMS[key] = _jit_nuts(config)
    return _PROGRAMS[key]


def _jit_nuts(config: SamplerConfig):
    """`_nuts_program`'s jitted function for `config` (XLA compiles it at its first call)."""
    from functools import partial

    import jax
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import potential_energy

    model = partial(sampled_model, likelihood=config.likelihood)
    init_kernel, sample_kernel = hmc(
        potential_fn_gen=lambda *args: partial(potential_energy, model, args, {}), algo="NUTS"
    )

    def chain(rng_key, init, args):
        state = init_kernel(
            init,
            config.warmup,
            dense_mass=True,
            target_accept_prob=config.target_accept,
            model_args=args,
            rng_key=rng_key,
        )

        def step(state, _):
            state = sample_kernel(state, model_args=args)
            extra = (state.num_steps, state.diverging, state.accept_prob, state.potential_energy, state.energy)
            return state, (state.z, extra)

        _, trace = jax.lax.scan(step, state, None, length=config.warmup + config.samples)
        return jax.tree.map(lambda x: x[config.warmup :], trace)

    return jax.jit(jax.vmap(chain, in_axes=(0, 0, None)))


def fit_bayes(runs: Runs, point: PointFit, priors: Priors, config: SamplerConfig) -> BayesFit:
    """Run NUTS for `point.form` on `runs`, starting from `point`; diagnostics are not enforced
    here (see `BayesFit.diagnostics`)."""
    import jax
    import jax.numpy as jnp

    if config.likelihood not in ("normal", "student"):
        raise PplawError(f"--likelihood {config.likelihood!r}: expected 'normal' or 'student'")
    if config.chains < 2:
        raise PplawError(f"--chains {config.chains}: at least 2 chains are needed to compute r_hat")
    form, design = point.form, point.design
    priors = priors.resolved(runs)
    inputs = sampler_inputs(runs, design, priors, config.student_df)
    rng = np.random.default_rng(config.seed)
    init = _init_params(point, config.chains, rng, priors)
    init = jax.tree.map(lambda a: jnp.asarray(a, dtype=jnp.float32), init)
    t0 = time.perf_counter()
    z, extra = _nuts_program(config)(
        jax.random.split(jax.random.PRNGKey(config.seed), config.chains),
        init,
        tuple(jnp.asarray(a, dtype=jnp.float32 if a.dtype == float else bool) for a in inputs),
    )
    z, extra = jax.device_get((z, extra))
    wall = time.perf_counter() - t0

    m, t, slopes = (np.asarray(z[k], dtype=np.float64) for k in ("m", "t", "s"))
    u = uncentred(m, t, slopes[..., : form.n_coef - 1])  # the law's slots; the padded ones are unused
    draws = {k: np.asarray(v, dtype=float) for k, v in design.params(u).items()}
    draws["noise"] = np.exp(np.asarray(z["noise"], dtype=np.float64))
    flat = {k: v.reshape(-1) for k, v in draws.items()}
    log_lik = pointwise_log_lik(form, flat, runs, config.likelihood, config.student_df)
    c, d = draws["noise"].shape
    num_steps, diverging, accept_prob, potential, energy = extra
    sample_stats = {
        "diverging": np.asarray(diverging, dtype=bool),
        "n_steps": np.asarray(num_steps),
        "tree_depth": np.floor(np.log2(np.asarray(num_steps) + 1)).astype(int),
        "acceptance_rate": np.asarray(accept_prob, dtype=float),
        "lp": -np.asarray(potential, dtype=float),
        "energy": np.asarray(energy, dtype=float),
    }
    return BayesFit(
        form, design, priors, config, draws, sample_stats, log_lik.reshape(c, d, -1), runs, wall, "vectorized"
    )


def fit_bayes_laws(
    runs: Runs, points: dict[str, PointFit], priors: Priors, config: SamplerConfig
) -> dict[str, BayesFit]:
    """`fit_bayes` of several laws on the same runs, one law per thread on as many threads as the
    process has cores: each law's fit is the one it makes alone (same program, starts, keys and
    draws), and XLA runs calls from different threads side by side (two laws on two cores: 1.7x,
    benchmarks/results/fit_stage_speed.md). A study's rivals for PSIS-LOO run beside its chosen law."""
    from concurrent.futures import ThreadPoolExecutor

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with ThreadPoolExecutor(max(1, min(len(points), cores))) as pool:
        done = {name: pool.submit(fit_bayes, runs, point, priors, config) for name, point in points.items()}
        return {name: future.result() for name, future in done.items()}


def prior_predictive(
    runs: Runs,
    design: Design,
    priors: Priors,
    likelihood: str,
    student_df: float,
    num_samples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Log-losses ``[num_samples, n]`` of the runs drawn from the priors alone (no observations)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import Predictive

    priors = priors.resolved(runs)
    z = jnp.asarray(design.z(runs.mu, runs.sigma, runs.tokens), dtype=jnp.float32)
    scales = jnp.asarray(priors.coef_scales(design.form), dtype=jnp.float32)
    draws = Predictive(numpyro_model, num_samples=num_samples)(
        jax.random.PRNGKey(seed), z, None, priors, scales, likelihood, student_df
    )
    return np.asarray(draws["log_loss"], dtype=float)


def group_log_lik(log_lik: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``[..., n]`` pointwise log-likelihood -> ``[..., n_groups]``, summed over each group's rows."""
    n_groups = int(groups.max()) + 1
    return np.stack([log_lik[..., groups == g].sum(axis=-1) for g in range(n_groups)], axis=-1)


LOO_METHOD = (
    "PSIS leave-one-group-out: each draw's pointwise log-likelihood summed over the rows of each run "
    "group, then arviz.loo and arviz.compare (stacking weights) on those group log-likelihoods; elpd on "
    "the log-loss scale, higher is better"
)


def loo_compare(fits: dict[str, BayesFit]) -> dict:
    """PSIS leave-one-group-out of each law (`LOO_METHOD`) and the ``az.compare`` ranking.

    All fits must be of the same runs.  Pareto-k counts use arviz's sample-size dependent
    threshold ``good_k``; a "bad" k means that group's LOO estimate is unreliable.
    """
    az = import_arviz()
    idatas = {}
    for name, fit in fits.items():
        names = list(fit.form.param_names) + ["noise"]
        idatas[name] = az.from_dict(
            posterior={k: fit.draws[k] for k in names},
            log_likelihood={"log_loss_group": group_log_lik(fit.log_lik, fit.runs.groups)},
            dims={"log_loss_group": ["group"]},
        )
    out: dict[str, Any] = {"method": LOO_METHOD, "laws": {}}
    for name, idata in idatas.items():
        loo = az.loo(idata, pointwise=True)
        k = np.asarray(loo.pareto_k)
        good_k = float(loo.good_k)
        out["laws"][name] = {
            "elpd_loo": float(loo.elpd_loo),
            "se": float(loo.se),
            "p_loo": float(loo.p_loo),
            "n_groups": int(k.size),
            "pareto_k": {
                "good_k": good_k,
                "good": int(np.sum(k <= good_k)),
                "bad": int(np.sum((k > good_k) & (k <= 1))),
                "very_bad": int(np.sum(k > 1)),
            },
            "warning": bool(loo.warning),
        }
    table = az.compare(idatas)
    for name, row in table.iterrows():
        out["laws"][name].update(
            {
                "rank": int(row["rank"]),
                "elpd_diff": float(row["elpd_diff"]),
                "dse": float(row["dse"]),
                "weight": float(row["weight"]),
            }
        )
    out["best"] = str(table.index[0])
    return out
