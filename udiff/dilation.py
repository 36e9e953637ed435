"""Sampling an unnormalized density pi without a model: annealed Langevin on the dilation path, and baselines.

The dilation path (Chehab & Korba 2024, "A Practical Diffusion Path for Sampling") is mu_lam = Law(sqrt(lam) X),
X ~ pi, for lam from ~0 (a Dirac at the origin) to 1 (the target). Its density and score are closed form in
terms of pi, so, unlike the Gaussian-convolution (diffusion) path, no Monte-Carlo score estimate is needed.

Which part is what (docs/dilation-smc.md has the derivations):

    [paper]   the path mu_lam = Law(sqrt(lam) X) and its closed-form score lam^{-1/2} grad log pi(x / sqrt(lam))
              (`value_and_score`, by autograd of log mu_lam); "Langevin dynamics guided by the path, using
              adaptive step sizes".
    [ours]    the concrete rule: step h * lam at level lam (mu_lam is L/lam-smooth when pi is L-smooth), the lam
              grids (geometric / log-quadratic / linear / cosine in t), the start x = sqrt(h lam_min) xi, the
              optional MALA correction at every step (valid because log mu_lam is known up to pi's own
              constant), per-particle adaptation of h towards a target acceptance rate, and optional final MALA
              steps at lam = 1.
    [ours]    dilation-smc: sequential Monte Carlo along the laws the particles follow in y (below), with exact
              weights, a pilot population that adapts the path and followers whose log Z replicates give its
              standard error (docs/dilation-smc.md).
    [ours]    the baselines and their budget: ULA and MALA at lam = 1 from the same start, and annealed Langevin
              on the Gaussian-convolution path Law(sqrt(lam) X + sqrt(1 - lam) Z) with self-normalized importance
              sampling scores; every sampler gets the same number of target-gradient evaluations per particle
              (`steps`), counted as they happen.

The frame the sampler runs in (derived, §3.3; tests/test_dilation.py checks it against the x-frame steps):
written in y = x / sqrt(lam), a Langevin step h lam on mu_lam is exactly a Langevin step h on pi (MALA's
acceptance too), and raising lam from lam_a to lam_b with x held fixed multiplies y by sqrt(lam_a / lam_b).
`sample_dilation` keeps y, so it is exact for any lambda_min > 0 (1e-300 included), where x, the steps h lam
and the scores lam^{-1/2} grad log pi would under- or overflow.

What the path does to mode weights (derived; measured in tests/test_dilation.py and the README): the path lowers
no energy barrier (the barriers and weights of mu_lam are pi's at every lam). In continuous time the contractions
are a drift -c y, c = (1/2) d log lam / d tau with tau the Langevin time in y, so the particles move as Langevin
on the tilted law pi(y) exp(-c |y|^2 / 2), a Gaussian factor centred on the path's start. The tilt changes the
weight of mode k by a factor that depends only on its distance from the origin (for equal isotropic widths), and
it draws the modes in towards the origin, where the particles start and choose between them. So modes of equal
width equidistant from the origin get pi's weights when c starts at a few units and fades out slowly (the
`log-quadratic` grid: c = ln(1/lambda_min) (1 - t) / (h steps), decaying linearly to 0); with c too small the
split is plain Langevin's, made within a few steps of the origin; with c too large and fast, the heaviest mode
takes too much. A mode at the origin takes more than its weight from every mode farther out, whatever the grid.

Shapes: particles x are (N, d) float tensors on one device; `log_prob` maps (N, d) -> (N,). Noise comes from
rng.NoiseSource: particle k draws everything (start, every step's normals and uniforms, every importance sample)
from seed k, and every adaptation is per particle, so a particle does not depend on its batch.
No click, tqdm or file system here.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Optional

import torch

from .errors import RecipeError, UdiffError
from .registry import LAMBDA_GRIDS, TARGET_SAMPLERS
from .rng import NoiseSource
from .smc import Populations, bisect_next, conditional_ess, pooled_log_z

ADAPT_RATE = 0.05        # Robbins-Monro gain of log h per step towards the target acceptance rate (our choice)
CONV_START_STEP = 0.1    # convolution path: step at lam -> 0, where mu_lam is ~ N(0, I) (our choice)
CONV_LAMBDA_FLOOR = 1e-6  # convolution path: below this lam, mu_lam is N(0, I) to 1e-3 in scale (our choice)

LogProb = Callable[[torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------------
# The path


# lam at t in [0, 1] from lambda_min (lm) to 1, one small rule per grid name (all our choice)
for _name, _rule in (("geometric", lambda t, lm: lm ** (1.0 - t)),                          # log lam linear
                     ("log-quadratic", lambda t, lm: lm ** ((1.0 - t) ** 2)),               # log lam quadratic
                     ("linear", lambda t, lm: lm + (1.0 - lm) * t),                         # lam linear in t
                     ("cosine", lambda t, lm: lm + (1.0 - lm) * math.sin(0.5 * math.pi * t) ** 2)):
    LAMBDA_GRIDS.implements(_name)(_rule)
GRIDS = LAMBDA_GRIDS.names()


def lambda_levels(kind: str, levels: int, lambda_min: float) -> list[float]:
    """lam_1 = lambda_min < ... < lam_K = 1 (one level gives [1.0]); t = k / (K - 1) on [0, 1]."""
    if kind not in LAMBDA_GRIDS:
        raise RecipeError(f"[sample] lambda_grid: {kind!r} is not allowed (allowed: {', '.join(GRIDS)})")
    if levels == 1:
        return [1.0]
    rule = LAMBDA_GRIDS.get(kind)
    return [rule(k / (levels - 1), lambda_min) for k in range(levels - 1)] + [1.0]


def dilated_log_prob(log_prob: LogProb, x: torch.Tensor, lam: float) -> torch.Tensor:
    """log mu_lam(x) up to pi's constant, for the law of sqrt(lam) X."""
    # log mu_lam(x) = log pi(x / sqrt(lam)) - (d/2) log lam: change of variables x = sqrt(lam) X (paper's path)
    return log_prob(x / math.sqrt(lam)) - 0.5 * x.shape[-1] * math.log(lam)


def value_and_score(log_prob: LogProb, x: torch.Tensor, lam: float = 1.0):
    """log mu_lam(x) and the score grad log mu_lam(x) = lam^{-1/2} (grad log pi)(x / sqrt(lam)), by autograd.

    Returns detached (N,) log-densities (non-finite values become -inf) and (N, d) scores.
    """
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        lp = dilated_log_prob(log_prob, xg, lam)
        (g,) = torch.autograd.grad(lp.sum(), xg)
    lp = lp.detach()
    return torch.where(torch.isnan(lp), torch.full_like(lp, -math.inf), lp), g


def contraction(lams: list[float], per_level: list[int], step_size: float) -> float:
    """c at the start of the path: the pull -c y towards the origin per unit Langevin time in y (0: no pull).

    Between the first two levels, ln(lam_2 / lam_1) / 2 of log-contraction over the first level's per_level[0]
    steps of Langevin time step_size each: c = (1/2) d log lam / d tau (module docstring).
    """
    if len(lams) < 2:
        return 0.0
    return 0.5 * math.log(lams[1] / lams[0]) / (max(per_level[0], 1) * step_size)


def uniforms(noise: NoiseSource, stream: int, device) -> torch.Tensor:
    """(B,) uniforms in (0, 1), one per particle, from its own seed (24 bits of the counter hash)."""
    return noise.uniform(stream, (1,))[:, 0].to(device)


# ---------------------------------------------------------------------------------------------------
# One Langevin step, shared by every sampler


class Chain:
    """Particles and what is known about them: log pi and its score at x (None when stale), per-particle steps."""

    def __init__(self, x: torch.Tensor, step_size: float):
        self.x = x
        self.lp: Optional[torch.Tensor] = None
        self.g: Optional[torch.Tensor] = None
        self.h = torch.full((x.shape[0], 1), float(step_size), dtype=x.dtype, device=x.device)
        self.evals = 0          # target-gradient evaluations per particle
        self.accepted = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        self.proposals = 0

    def refresh(self, log_prob: LogProb):
        if self.lp is None:
            self.lp, self.g = value_and_score(log_prob, self.x)
            self.evals += 1

    def rescale(self, factor: float):
        """Multiply every particle by `factor`; what was known at the old positions is stale."""
        self.x = self.x * factor
        self.lp = self.g = None


def mala_log_accept(lp, lpp, x, xp, gp, z, s) -> torch.Tensor:
    """(N,) float64 log acceptance ratio of the Langevin proposal x' = x + s grad(x) + sqrt(2 s) z (s: (N, 1)).

    lp, lpp: log-densities at x and x'; gp: the score at x'. NaN (a non-finite proposal) becomes -inf.
    """
    back = x - xp - s * gp
    # log acceptance ratio of MALA: log pi(x') - log pi(x) + log q(x | x') - log q(x' | x) (standard)
    log_a = lpp - lp - (back * back).sum(1) / (4 * s[:, 0]) + (z * z).sum(1) / 2
    return torch.nan_to_num(log_a.double(), nan=-math.inf)


def langevin_step(log_prob: LogProb, chain: Chain, noise: NoiseSource, stream: int, mala: bool,
                  target_accept: Optional[float] = None) -> None:
    """One Langevin step on log_prob with step h per particle, Metropolis-adjusted when `mala`.

    ULA: x' = x + h grad log pi(x) + sqrt(2 h) xi. MALA accepts x' with probability
    min(1, pi(x') q(x | x') / (pi(x) q(x' | x))), q(b | a) = N(b; a + h grad log pi(a), 2 h I) (Roberts & Tweedie
    1996). With `target_accept`, each particle's h moves towards that acceptance rate (our choice).
    """
    chain.refresh(log_prob)
    x, lp, g, s = chain.x, chain.lp, chain.g, chain.h                      # s: (N, 1)
    z = noise(stream, (x.shape[1],)).to(x.dtype)
    xp = x + s * g + torch.sqrt(2.0 * s) * z  # x' = x + h score + sqrt(2h) xi (ULA, standard)
    if not mala:
        chain.x, chain.lp, chain.g = xp, None, None
        return
    lpp, gp = value_and_score(log_prob, xp)
    chain.evals += 1
    log_a = mala_log_accept(lp, lpp, x, xp, gp, z, s)
    accept = torch.log(uniforms(noise, stream + 1, x.device)) < log_a
    a = accept[:, None]
    chain.x = torch.where(a, xp, x)
    chain.lp = torch.where(accept, lpp, lp)
    chain.g = torch.where(a, gp, g)
    prob = torch.exp(log_a.clamp(max=0.0))
    chain.accepted += prob
    chain.proposals += 1
    if target_accept is not None:  # log h += ADAPT_RATE (alpha - target): Robbins-Monro, per particle (our choice)
        chain.h = (chain.h * torch.exp(ADAPT_RATE * (prob - target_accept)).to(chain.h.dtype)[:, None]).clamp(
            1e-8, 1e8)


# ---------------------------------------------------------------------------------------------------
# Budgets: how many steps each sampler takes for a number of target-gradient evaluations per particle


def _spread(total: int, parts: int) -> list[int]:
    """total split into `parts` near-equal counts, the larger ones last."""
    base, extra = divmod(total, parts)
    return [base + (1 if k >= parts - extra else 0) for k in range(parts)]


def plan_dilation(steps: int, levels: int, final_steps: int, mala: bool) -> list[int]:
    """Langevin steps per level so that the run costs exactly `steps` evaluations per particle.

    ULA costs one evaluation per step. MALA costs one per proposal plus one at each new level (the score of
    mu_lam changes with lam). Final MALA steps at lam = 1 cost one each, plus one after ULA annealing.
    """
    final_cost = final_steps + (1 if final_steps and not mala else 0)
    budget = steps - final_cost
    need = 2 * levels if mala else levels
    if budget < need:
        raise RecipeError(f"[sample] steps: {steps} evaluations per sample cannot cover {levels} levels"
                          f"{' with MALA' if mala else ''} and {final_steps} final steps (needs at least "
                          f"{need + final_cost}); raise steps or lower levels")
    return _spread(budget - levels if mala else budget, levels)


# ---------------------------------------------------------------------------------------------------
# Samplers: plain functions over a log-density and a per-particle noise source


def sample_dilation(log_prob: LogProb, dim: int, noise: NoiseSource, *, steps: int = 1000, levels: int = 100,
                    lambda_min: float = 1e-4, lambda_grid: str = "geometric", step_size: float = 0.05,
                    mala: bool = False, target_accept: Optional[float] = None, final_steps: int = 0,
                    x0: Optional[torch.Tensor] = None, device="cpu", progress=None):
    """Annealed Langevin on the dilation path from lambda_min to 1, then `final_steps` MALA steps at lam = 1.

    Args:
        log_prob: log pi up to a constant, (N, d) -> (N,).
        dim: d.  noise: per-particle noise (its length is the number of particles N).
        steps: target-gradient evaluations per particle, all included.
        levels, lambda_min, lambda_grid: the lam grid (`lambda_levels`).
        step_size: h, the step at lam = 1; the step at level lam is h * lam.
        mala: Metropolis-adjust every annealing step; target_accept: adapt h per particle towards this rate.
        x0: (N, d) particles at lambda_min to start from [default: sqrt(h lambda_min) xi, a near-Dirac at 0].
    Returns:
        x (N, d) on `device`, and a dict of what was used (evals per particle, acceptance, lam grid ends).
    """
    per_level = plan_dilation(steps, levels, final_steps, mala)
    lams = lambda_levels(lambda_grid, levels, lambda_min)
    # The chain holds y = x / sqrt(lam): there a step h lam on mu_lam is a step h on pi (module docstring).
    if x0 is None:
        y0 = math.sqrt(step_size) * noise(0, (dim,))  # x = sqrt(h lambda_min) xi, ~ a Dirac at 0 as mu_0 (our choice)
    else:
        y0 = x0 / math.sqrt(lams[0])
    chain = Chain(y0.to(device), step_size)
    stream, prev = 1, lams[0]
    for lam, n in zip(lams, per_level):
        if lam != prev:  # x held fixed while lam rises: y = x / sqrt(lam) shrinks by sqrt(lam_prev / lam) (derived)
            chain.rescale(math.sqrt(prev / lam))
            prev = lam
        for _ in range(n):  # step h lam at level lam (mu_lam is L/lam-smooth: derived; the rule is our choice)
            langevin_step(log_prob, chain, noise, stream, mala, target_accept)
            stream += 2
            if progress:
                progress(1)
    for _ in range(final_steps):
        langevin_step(log_prob, chain, noise, stream, True, target_accept)
        stream += 2
        if progress:
            progress(1)
    return chain.x, _stats(chain, "dilation", levels=levels, lambda_min=lambda_min, lambda_grid=lambda_grid,
                           contraction=contraction(lams, per_level, step_size))


def sample_langevin(log_prob: LogProb, dim: int, noise: NoiseSource, *, steps: int = 1000, step_size: float = 0.05,
                    lambda_min: float = 1e-4, mala: bool = False, target_accept: Optional[float] = None,
                    device="cpu", progress=None):
    """Plain Langevin on pi (lam = 1) from the dilation sampler's start: ULA, or MALA when `mala`.

    ULA takes `steps` steps; MALA takes steps - 1 proposals after one evaluation at the start.
    """
    if mala and steps < 2:
        raise RecipeError("[sample] steps: MALA needs at least 2 evaluations per sample; raise steps")
    x0 = math.sqrt(step_size * lambda_min) * noise(0, (dim,)).to(device)   # the same start as `sample_dilation`
    chain = Chain(x0, step_size)
    for i in range(steps - 1 if mala else steps):
        langevin_step(log_prob, chain, noise, 1 + 2 * i, mala, target_accept if mala else None)
        if progress:
            progress(1)
    return chain.x, _stats(chain, "mala" if mala else "ula")


def sample_ula(log_prob, dim, noise, **kw):
    """ULA at lam = 1 (see `sample_langevin`)."""
    return sample_langevin(log_prob, dim, noise, **{**kw, "mala": False})


def sample_mala(log_prob, dim, noise, **kw):
    """MALA at lam = 1 (see `sample_langevin`)."""
    return sample_langevin(log_prob, dim, noise, **{**kw, "mala": True})


def mc_score(log_prob: LogProb, x: torch.Tensor, lam: float, eps: torch.Tensor) -> torch.Tensor:
    """Importance-sampling estimate of the score of the Gaussian-convolution path at x, from M draws per particle.

    mu_lam = Law(sqrt(lam) X + sqrt(1 - lam) Z), Z ~ N(0, I). Given x, X has density ∝ pi(u) N(u; x/sqrt(lam),
    (1 - lam)/lam I); drawing u from that Gaussian and weighting by pi(u) (self-normalized) gives
    E[X | x] and E[grad log pi(X) | x]. eps: (N, M, d) standard normals.
    """
    n, m, d = eps.shape
    u = x[:, None, :] / math.sqrt(lam) + math.sqrt((1.0 - lam) / lam) * eps
    lp, g = value_and_score(log_prob, u.reshape(n * m, d), 1.0)
    w = torch.softmax(lp.view(n, m), dim=1)[..., None].to(x.dtype)          # self-normalized weights ∝ pi(u)
    w = torch.nan_to_num(w, nan=1.0 / m)                                     # every draw at pi = 0: equal weights
    g = torch.nan_to_num(g.view(n, m, d))
    # grad log mu_lam(x) = lam^{-1/2} E[grad log pi(X) | x]  (target score identity, derived §3.2)
    s_grad = (w * g).sum(1) / math.sqrt(lam)
    if lam >= 1.0:
        return s_grad
    # grad log mu_lam(x) = (sqrt(lam) E[X | x] - x) / (1 - lam)  (Tweedie's formula for the Gaussian kernel)
    s_tweedie = (math.sqrt(lam) * (w * u).sum(1) - x) / (1.0 - lam)
    # blend lam * identity + (1 - lam) * Tweedie: both estimate the same score; each is tame at one end (our choice)
    return lam * s_grad + (1.0 - lam) * s_tweedie


def sample_convolution_mc(log_prob: LogProb, dim: int, noise: NoiseSource, *, steps: int = 1000, levels: int = 100,
                          lambda_min: float = 1e-4, lambda_grid: str = "geometric", step_size: float = 0.05,
                          mc_samples: int = 16, device="cpu", progress=None):
    """Annealed ULA on the Gaussian-convolution path with Monte-Carlo scores (`mc_score`), the same budget.

    Every step costs `mc_samples` evaluations, so it takes steps // mc_samples steps over min(levels, that) levels.
    It starts from its base N(0, I) (the path's lam -> 0 end: the same normals as the other samplers, unscaled),
    on the recipe's lam grid from max(lambda_min, CONV_LAMBDA_FLOOR): lower levels would all be that N(0, I).
    The step at level lam is h lam + CONV_START_STEP (1 - lam) (our choice: N(0, I)-sized at the start, h at pi).
    """
    iters = steps // mc_samples
    if iters < 1:
        raise RecipeError(f"[sample] steps: {steps} evaluations per sample do not pay for one step of "
                          f"{mc_samples} importance samples; raise steps or lower mc_samples")
    k = min(levels, iters)
    lams = lambda_levels(lambda_grid, k, max(lambda_min, CONV_LAMBDA_FLOOR))
    x = noise(0, (dim,)).to(device)
    evals, stream = 0, 1
    for lam, n in zip(lams, _spread(iters, k)):
        s = step_size * lam + CONV_START_STEP * (1.0 - lam)                # step on the convolution path (our choice)
        for _ in range(n):
            eps = noise(stream, (mc_samples, dim)).to(device, x.dtype)
            score = mc_score(log_prob, x, lam, eps)
            z = noise(stream + 1, (dim,)).to(device, x.dtype)
            x = x + s * score + math.sqrt(2.0 * s) * z
            evals += mc_samples
            stream += 2
            if progress:
                progress(1)
    return x, {"sampler": "convolution-mc", "evals": evals, "levels": k, "mc_samples": mc_samples,
               "lambda_min": lambda_min, "lambda_grid": lambda_grid}


# ---------------------------------------------------------------------------------------------------
# Sequential Monte Carlo along the tilt family (docs/dilation-smc.md)
#
# In y = x / sqrt(lam) the particles of `sample_dilation` follow pi_c(y) ∝ pi(y) exp(-c |y|^2 / 2) with c falling
# to 0 (module docstring). Each pi_c is known up to one constant, and from c to c' the unnormalized densities differ
# by exp(-(c' - c) |y|^2 / 2), which needs no target evaluation: SMC along c from c0 to 0 weights the particles
# exactly, and the product of the mean incremental weights estimates Z = ∫ pi, the constant of the user's log pi.

SMC_START_ESS = 0.1        # c0: the smallest rung 4^k whose first-level ESS is at least this fraction (our choice)
SMC_LADDER = range(-20, 31)  # the rungs k of c0 = 4^k the search may try (our choice: scales 2^-30 ... 2^20)
SMC_ACCEPT = 0.574         # MALA acceptance the step adapts to unless target_accept is given (Roberts & Rosenthal)
SMC_GAIN = 1.0             # log theta += SMC_GAIN (acceptance - target) after each move, the pilot's (our choice)
RESAMPLE_STREAM = 1 << 30  # noise streams of the resampling uniforms (the population's first seed; one per level)
SMC_MIN_BLOCK = 50         # particles per follower population at least: fewer seeds, fewer of them (our choice)
SMC_PILOT = 500            # particles of the pilot at least, where there are twice as many (our choice)
SMC_FINAL = 0.1            # this share of the budget, `moves` at least, is spent at c = 0 after the last resampling
                           # (our choice: the copies resampling makes need moves to come apart)


class SamplerDiverged(UdiffError):
    """A sampler's result is not finite (exit status 1: the input was valid, the run failed)."""

    exit_code = 1


def _evaluator(log_prob: LogProb, chunk: int, share: float, progress):
    """y (M, d) float64 -> (log pi, score) in float64, `chunk` particles at a time; `.evals` counts the calls.

    Each call advances the progress bar by `share`, the particles' fraction of all particles.
    """

    def evaluate(y):
        parts = [value_and_score(log_prob, y[i:i + chunk].float()) for i in range(0, len(y), chunk)]
        evaluate.evals += 1
        if progress:
            progress(share)
        return torch.cat([p[0] for p in parts]).double(), torch.cat([p[1] for p in parts]).double()

    evaluate.evals = 0
    return evaluate


def start_contraction(evaluate, xi: torch.Tensor, min_ess: float = SMC_START_ESS):
    """c0 = 4^k: from k = 0, the smallest rung whose first level has ESS >= min_ess, and log pi, score there.

    The first level draws y = xi / sqrt(c0), xi ~ N(0, I), and weights it by pi(y): exact importance sampling of
    pi_c0 from N(0, I / c0) (docs/dilation-smc.md §4). Its ESS rises with c0: a narrower Gaussian sees a flatter
    pi. A smaller c0 leaves less tilt for the moves to undo. Rungs go down from k = 0 while the ESS stays high
    enough, or up until it is. Each rung costs one evaluation.
    """
    min_ess = max(min_ess, min(0.5, 5.0 / len(xi)))  # a few particles always look even: ask for 5 (or half)

    def ess(lp):
        w = torch.softmax(torch.nan_to_num(lp, nan=-math.inf), 0)
        return float(1.0 / (w * w).sum() / len(w)) if torch.isfinite(lp).any() else 0.0

    k = 0
    lp, g = evaluate(xi * 2.0 ** -k)
    best = (k, lp, g) if ess(lp) >= min_ess else None
    step = -1 if best else 1
    while k + step in SMC_LADDER:
        k += step
        lpk, gk = evaluate(xi * 2.0 ** -k)
        good = ess(lpk) >= min_ess
        if step < 0 and not good:
            break
        if good:
            best = (k, lpk, gk)
            if step > 0:
                break
    if best is None:
        raise UdiffError(f"dilation-smc: no starting contraction c0 = 4^k, k in {SMC_LADDER.start}.."
                         f"{SMC_LADDER.stop - 1}, gives importance weights pi(y), y ~ N(0, I/c0), an ESS of "
                         f"{min_ess}; is log pi finite near the origin? Give [sample] c0 to start elsewhere")
    return 4.0 ** best[0], best[1], best[2]


class PilotStep:
    """MALA's step on pi_c, adapted on the pilot: h = theta / kappa (docs/dilation-smc.md §6).

    kappa, the weighted mean of |grad log pi_c|^2 / d, is the curvature scale of pi_c (E|grad log p|^2 =
    E[-Laplacian log p]: c for N(0, I/c)); theta, dimensionless, starts at d^(-1/3) and follows the acceptance:
    log theta += SMC_GAIN (acceptance - target) after every move.
    """

    def __init__(self, dim: int, target: float):
        self.theta, self.target, self.dim = dim ** (-1.0 / 3.0), target, dim

    def h(self, cloud: "_Cloud", c: float) -> float:
        gc = cloud.g - c * cloud.y
        kappa = float((torch.exp(cloud.logw) * (gc * gc).sum(1)).sum()) / self.dim
        return min(max(self.theta / max(kappa, 1e-300), 1e-30), 1e30)

    def adapt(self, prob: torch.Tensor):
        self.theta *= math.exp(SMC_GAIN * (float(prob.mean()) - self.target))


class _Cloud:
    """Weighted particles of R populations on pi_c, started at c0: y = xi / sqrt(c0), weighted by pi(y).

    Holds y, log pi and its score at y, normalized log-weights per population, each population's running
    log Z estimate, and what it cost (evaluations per particle, resamplings, MALA acceptance, lowest CESS).
    """

    def __init__(self, evaluate, noise: NoiseSource, populations: int, dim: int, c0: float, device, first=None):
        self.evaluate, self.noise = evaluate, noise
        self.pops = Populations(len(noise), populations, device)
        self.y = noise(0, (dim,)).to(device, torch.float64) / math.sqrt(c0)
        lp, self.g = first if first is not None else evaluate(self.y)
        self.lp = torch.nan_to_num(lp, nan=-math.inf)
        self.log_sizes = torch.log(self.pops.sizes.to(torch.float64))
        # first level: y ~ N(0, I/c0) weighted by pi(y); E[pi(y)] (2 pi / c0)^{d/2} = Z_c0 (docs/dilation-smc.md §2)
        self.log_z = self.pops.logsumexp(self.lp) - self.log_sizes + 0.5 * dim * math.log(2.0 * math.pi / c0)
        self.logw = self.pops.normalize(self.lp)
        self.first_seeds = NoiseSource(noise.seeds[self.pops.starts].cpu(), device)
        self.resamples, self.accepted, self.proposals, self.cess_min, self.stream = 0, 0.0, 0, 1.0, 1

    def resample(self, threshold: float, level: int):
        """Systematic resampling of the populations whose ESS fraction is below `threshold`."""
        which = self.pops.ess(self.logw) < threshold
        if which.any():
            u = uniforms(self.first_seeds, RESAMPLE_STREAM + level, self.y.device)
            anc = self.pops.systematic(self.logw, u, which)
            self.y, self.lp, self.g = self.y[anc], self.lp[anc], self.g[anc]
            self.logw = torch.where(which[self.pops.pop], -self.log_sizes[self.pops.pop], self.logw)
            self.resamples += int(which.sum())

    def move(self, c: float, h: float) -> torch.Tensor:
        """One MALA move of every particle on pi_c with step h; returns the (M,) acceptance probabilities."""
        y, lp, g = self.y, self.lp, self.g
        z = self.noise(self.stream, (y.shape[1],)).to(y)
        yp = y + h * (g - c * y) + math.sqrt(2.0 * h) * z     # Langevin proposal on pi_c: grad log pi - c y
        lpp, gp = self.evaluate(yp)
        log_a = mala_log_accept(lp - 0.5 * c * (y * y).sum(1), lpp - 0.5 * c * (yp * yp).sum(1), y, yp,
                                gp - c * yp, z, torch.full_like(y[:, :1], h))
        ok = torch.log(uniforms(self.noise, self.stream + 1, y.device)) < log_a
        self.y, self.lp, self.g = torch.where(ok[:, None], yp, y), torch.where(ok, lpp, lp), torch.where(
            ok[:, None], gp, g)
        self.stream += 2
        prob = torch.exp(log_a.clamp(max=0.0))
        self.accepted, self.proposals = self.accepted + float(prob.sum()), self.proposals + len(prob)
        return prob

    def sq(self) -> torch.Tensor:
        return 0.5 * (self.y * self.y).sum(1)

    def reweight(self, c: float, nxt: float):
        """From pi_c to pi_nxt: log w += log pi_nxt(y) - log pi_c(y) = (c - nxt) |y|^2 / 2 (exact, no evaluation)."""
        inc = (c - nxt) * self.sq()
        self.cess_min = min(self.cess_min, float(self.pops.cess(self.logw, inc).min()))
        self.log_z = self.log_z + self.pops.logsumexp(self.logw + inc)   # log Z_nxt/Z_c += log sum_i W_i w_i
        self.logw = self.pops.normalize(self.logw + inc)


def _pilot(evaluate, noise, dim, *, steps, moves, cess, resample_ess, c0, accept, device):
    """The pilot population: adaptive c0, levels (bisection on its CESS) and steps. Returns it and its path.

    The path is [(c_k, h_k, cess_k)] for each level k (the tilt, MALA's step there, the CESS of the step to the
    next level) and the step at c = 0. Every level gets `moves` moves and `final_moves(steps, moves)` are kept for
    c = 0: a budget that cannot pay for the path is refused once the pilot (a tenth of the work) finds out.
    """
    if c0 is None:
        xi = noise(0, (dim,)).to(device, torch.float64)
        c0, lp, g = start_contraction(evaluate, xi)
        cloud = _Cloud(evaluate, noise, 1, dim, c0, device, first=(lp, g))
    else:
        cloud = _Cloud(evaluate, noise, 1, dim, c0, device)
    step, path, c = PilotStep(dim, accept), [], c0
    while c > 0:
        if evaluate.evals + moves + final_moves(steps, moves) > steps:
            raise RecipeError(f"[sample] steps: {steps} evaluations per sample do not pay for dilation-smc's path "
                              f"on this target: its pilot had reached c = {c:.3g} (from c0 = {c0:.3g}) after "
                              f"{len(path)} levels of {moves} moves and {evaluate.evals} evaluations; raise steps, "
                              "or lower cess")
        cloud.resample(resample_ess, len(path))
        for _ in range(moves):
            h = step.h(cloud, c)
            step.adapt(cloud.move(c, h))
        s = cloud.sq()
        # the next level: as far down as keeps the conditional ESS >= cess (docs/dilation-smc.md §3)
        nxt = bisect_next(lambda b, c=c, s=s: conditional_ess(cloud.logw, (c - b) * s), c, cess)
        path.append((c, h, conditional_ess(cloud.logw, (c - nxt) * s)))
        cloud.reweight(c, nxt)
        c = nxt
    cloud.resample(1.0 - 1e-9, len(path))      # at c = 0: equal weights, then the rest of the budget
    h = step.h(cloud, 0.0)
    while evaluate.evals < steps:
        h = step.h(cloud, 0.0)
        step.adapt(cloud.move(0.0, h))
    return cloud, c0, path, h


def final_moves(steps: int, moves: int) -> int:
    """Moves kept for c = 0, after the last resampling to equal weights: SMC_FINAL of the budget, `moves` at least."""
    return max(moves, int(SMC_FINAL * steps))


def respace(path, h_end: float, levels: int) -> list[tuple[float, float]]:
    """`levels` levels (c, h) from the pilot's path, equally spaced in its thermodynamic length, ending at c = 0.

    A step's length is sqrt(-log CESS): (dc) sd(|y|^2 / 2) for small steps, and additive when the log-weights are
    Gaussian (then CESS = exp(-Var log w)); the pilot's steps all have about the length its `cess` allows.
    Cutting the summed length into `levels` equal parts gives steps of equal cost, each cheaper than the pilot's
    when there are more of them. c and log h are linear in the length within each of the pilot's steps. The last
    entry is (0, h_end), for the moves at c = 0.
    """
    cs = [p[0] for p in path] + [0.0]
    logh = [math.log(p[1]) for p in path] + [math.log(h_end)]
    tau = [0.0]
    for p in path:
        tau.append(tau[-1] + math.sqrt(max(-math.log(max(p[2], 1e-300)), 0.0)))
    if tau[-1] <= 0.0:                            # no length to measure: equal steps in c
        tau = [k / len(path) for k in range(len(path) + 1)]
    out, j = [], 0
    for i in range(levels):
        t = tau[-1] * i / levels
        while j + 1 < len(path) and tau[j + 1] <= t:
            j += 1
        f = (t - tau[j]) / (tau[j + 1] - tau[j]) if tau[j + 1] > tau[j] else 0.0
        out.append((cs[j] + f * (cs[j + 1] - cs[j]), math.exp(logh[j] + f * (logh[j + 1] - logh[j]))))
    return out + [(0.0, h_end)]


def sample_dilation_smc(log_prob: LogProb, dim: int, noise: NoiseSource, *, steps: int = 1000, cess: float = 0.5,
                        moves: int = 2, resample_ess: float = 0.5, populations: int = 10,
                        c0: Optional[float] = None, target_accept: Optional[float] = None, batch_size: int = 100_000,
                        device="cpu", progress=None):
    """SMC along pi_c(y) ∝ pi(y) exp(-c |y|^2 / 2) from c0 down to c = 0 (the dilation path's particles, weighted).

    The seeds are split into `populations` contiguous blocks (the first, the pilot, of at least SMC_PILOT seeds
    where there are twice as many; the others of at least SMC_MIN_BLOCK). The pilot chooses everything adaptive:
    c0 (`start_contraction`), each next level (bisection on its conditional ESS, >= cess), MALA's step
    (`PilotStep`). The other blocks follow the pilot's path, re-spaced into as many levels as `steps` pays for
    (`respace`): given the pilot, each is an independent SMC run on a fixed schedule, so their estimates of Z are
    unbiased and independent, and their spread is log Z's standard error (docs/dilation-smc.md §5). Every block
    keeps its own weights and resamples (systematic) on its own ESS; the pilot's particles are samples too.

    Args:
        log_prob: log pi up to a constant Z, (N, d) -> (N,).  dim: d.
        noise: per-particle noise; particle k draws its start and every move from seed k (a sample depends on its
            block's seeds and, through the path, the pilot's; not on `batch_size`).
        steps: target-gradient evaluations per particle, all spent: the pilot's c0 search, `moves` MALA moves per
            level, and a tenth (`final_moves`) or more at c = 0 after a last resampling to equal weights (a budget
            too small for the pilot's path is a RecipeError).
        cess: the pilot's levels keep their conditional ESS >= cess.  moves: MALA moves per level.
        resample_ess: a block resamples when its ESS falls below this fraction.
        c0: the first level's tilt [default: `start_contraction`].  target_accept: MALA acceptance [0.574].
        batch_size: particles per target evaluation (memory only).
    Returns:
        x (N, d) equally weighted (at c = 0, y = x), and a dict with log_z, log_z_stderr, levels, resamples, evals.
    """
    n = len(noise)
    m0 = n if populations == 1 or n < 2 * SMC_MIN_BLOCK else max(n // populations, min(SMC_PILOT, n // 2))
    followers = min(populations - 1, (n - m0) // SMC_MIN_BLOCK)
    seeds = noise.seeds.cpu()
    accept = SMC_ACCEPT if target_accept is None else target_accept
    evaluate = _evaluator(log_prob, batch_size, m0 / n, progress)
    pilot, c_start, path, h_end = _pilot(evaluate, NoiseSource(seeds[:m0], device), dim, steps=steps, moves=moves,
                                         cess=cess, resample_ess=resample_ess, c0=c0, accept=accept, device=device)
    clouds, levels = [pilot], len(path)
    if followers:
        follow = _evaluator(log_prob, batch_size, (n - m0) / n, progress)
        cloud = _Cloud(follow, NoiseSource(seeds[m0:], device), followers, dim, c_start, device)
        levels = (steps - 1 - final_moves(steps, moves)) // moves   # one evaluation at c0; the rest at c = 0
        plan = respace(path, h_end, levels)
        for k, ((c, h), (nxt, _)) in enumerate(zip(plan, plan[1:])):
            cloud.resample(resample_ess, k)
            for _ in range(moves):
                cloud.move(c, h)
            cloud.reweight(c, nxt)
        cloud.resample(1.0 - 1e-9, levels)
        while follow.evals < steps:
            cloud.move(0.0, h_end)
        clouds.append(cloud)
        lz, se = pooled_log_z(cloud.log_z, cloud.pops.sizes)
    else:                                                    # the pilot alone: its log Z, no standard error
        lz, se = float(pilot.log_z[0]), math.nan
    if not math.isfinite(lz):
        raise SamplerDiverged("dilation-smc: the estimate of log Z is not finite (every weight of a population "
                              "vanished: log pi is -inf or NaN where its particles are); nothing written")
    out = {"sampler": "dilation-smc", "evals": steps, "levels": levels, "pilot_levels": len(path),
           "resamples": sum(cl.resamples for cl in clouds), "populations": 1 + followers, "contraction": c_start,
           "log_z": lz, "log_z_stderr": se, "cess_min": clouds[-1].cess_min,   # the followers' (or the pilot's)
           "accepted_sum": sum(cl.accepted for cl in clouds), "proposals": sum(cl.proposals for cl in clouds)}
    return torch.cat([cl.y for cl in clouds]).float(), out


def _stats(chain: Chain, name: str, **extra) -> dict:
    out = {"sampler": name, "evals": chain.evals, **extra}
    if chain.proposals:
        out["acceptance"] = float(chain.accepted.sum()) / (chain.proposals * chain.x.shape[0])
        out["accepted_sum"] = float(chain.accepted.sum())
        out["proposals"] = chain.proposals * chain.x.shape[0]
        out["step_size_median"] = float(chain.h.median())
    return out


for _name, _fn in (("dilation-smc", sample_dilation_smc), ("dilation", sample_dilation), ("ula", sample_ula),
                   ("mala", sample_mala), ("convolution-mc", sample_convolution_mc)):
    TARGET_SAMPLERS.implements(_name)(_fn)
SAMPLERS = TARGET_SAMPLERS.names()
# their particles interact: all seeds go in one call (`generate`)
POPULATION_SAMPLERS = tuple(n for n in SAMPLERS if TARGET_SAMPLERS.entry(n).info.get("population"))


def iterations(sampler: str, steps: int, levels: int = 100, final_steps: int = 0, mala: bool = False,
               mc_samples: int = 16, **_) -> int:
    """How many Langevin steps a sampler takes for a budget (for progress bars)."""
    if sampler == "dilation":
        return sum(plan_dilation(steps, levels, final_steps, mala)) + final_steps
    if sampler == "convolution-mc":
        return steps // mc_samples
    return steps - 1 if sampler == "mala" else steps  # dilation-smc: one tick per evaluation, `steps` in all


# ---------------------------------------------------------------------------------------------------
# Many particles: batches of seeds


def generate(log_prob: LogProb, dim: int, seeds, sampler: str = "dilation-smc", *, batch_size: int = 100_000,
             device="cpu", progress=None, **settings):
    """Particles for `seeds` (particle k from seed k alone), in batches that do not change them.

    settings: the sampler's keyword arguments (steps, levels, lambda_min, lambda_grid, step_size, mala,
    target_accept, final_steps, mc_samples, cess, moves, resample_ess, populations, c0); those a sampler does
    not take are ignored. The samplers of POPULATION_SAMPLERS see every seed in one call (their particles
    interact within a population of seeds) and evaluate the target `batch_size` particles at a time.
    Returns x (N, d) float32 on the CPU and a dict of what was used (evals per particle, acceptance, ...).
    """
    if sampler not in TARGET_SAMPLERS:
        raise RecipeError(f"[sample] sampler: {sampler!r} is not allowed (allowed: {', '.join(SAMPLERS)})")
    fn = TARGET_SAMPLERS.get(sampler)
    target = sample_langevin if sampler in ("ula", "mala") else fn
    accepted = ["steps", "levels", "lambda_min", "lambda_grid", "step_size", "mala", "target_accept",
                "final_steps", "mc_samples", "cess", "moves", "resample_ess", "populations", "c0"]
    kwargs = {k: v for k, v in settings.items() if k in inspect.signature(target).parameters and k in accepted}
    seeds = list(seeds)
    batch = batch_size
    if sampler in POPULATION_SAMPLERS:
        kwargs["batch_size"], batch = batch_size, max(len(seeds), 1)
    xs, used = [], None
    acc, props = 0.0, 0
    for i in range(0, len(seeds), batch):
        noise = NoiseSource(seeds[i:i + batch], device)
        x, info = fn(log_prob, dim, noise, device=device, progress=progress, **kwargs)
        xs.append(x.detach().float().cpu())
        acc += info.pop("accepted_sum", 0.0)
        props += info.pop("proposals", 0)
        info.pop("acceptance", None)
        info.pop("step_size_median", None)
        used = info
    if props:
        used["acceptance"] = acc / props
    return torch.cat(xs), used
