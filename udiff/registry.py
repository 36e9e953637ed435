"""Name registries: every list of names a user can choose from, declared once, with what each one needs.

This module imports no torch, so the recipe schema and the CLI's `--help` read their choices from here.
The implementations register themselves by name in their own modules (`@SAMPLERS.implements("heun")`);
`get(name)` imports that module when first asked. Declaring a name without implementing it, or
implementing an undeclared one, fails at once (and tests/test_registry.py checks every registry).

Each entry may declare `requires`: traits that a process must have (see process.Process.traits); one
function, `check`, turns a mismatch into the one-line error that names what would work instead.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Entry:
    name: str
    doc: str
    requires: frozenset = field(default_factory=frozenset)
    info: dict = field(default_factory=dict)


TRAIT_WORDS = {
    "scalar": "one number per component (vp, ve, sub-vp)",
    "splitting": "a phase-space process of the complete recipe (psld, cld, recipe), whose linear part is exact",
}


class Registry:
    """An ordered table name → Entry, and name → implementation (registered by the implementing module)."""

    def __init__(self, what: str, module: str | None):
        self.what, self.module = what, module
        self._entries: dict[str, Entry] = {}
        self._impl: dict[str, object] = {}

    def declare(self, name: str, doc: str, requires=(), **info) -> None:
        self._entries[name] = Entry(name, doc, frozenset(requires), dict(info))

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        return self._entries[name]

    def doc(self) -> str:
        """'a (what a is), b (what b is), ...' for help texts."""
        return ", ".join(f"{e.name} ({e.doc})" for e in self._entries.values())

    def implements(self, name: str):
        if name not in self._entries:
            raise KeyError(f"{self.what} {name!r} is implemented but not declared in udiff/registry.py")

        def deco(obj):
            self._impl[name] = obj
            return obj
        return deco

    def get(self, name: str):
        from .errors import UdiffError

        if name not in self._entries:
            raise UdiffError(f"unknown {self.what} {name!r} (allowed: {', '.join(self.names())})")
        if name not in self._impl and self.module:
            importlib.import_module(self.module)
        return self._impl[name]

    def implemented(self) -> tuple[str, ...]:
        if self.module:
            importlib.import_module(self.module)
        return tuple(n for n in self._entries if n in self._impl)

    def usable(self, traits) -> list[str]:
        return [n for n, e in self._entries.items() if e.requires <= set(traits)]

    def check(self, name: str, traits, owner: str) -> None:
        """One line when entry `name` needs a trait that `owner` (e.g. "process 'psld'") lacks."""
        from .errors import UdiffError

        missing = self.entry(name).requires - set(traits)
        if missing:
            need = TRAIT_WORDS.get(sorted(missing)[0], sorted(missing)[0])
            ok = ", ".join(self.usable(traits)) or "none"
            raise UdiffError(f"{self.what} {name!r} needs {need}, which {owner} is not; use one of: {ok}")


# ------------------------------------------------------------------------------------------------
# Samplers of trained models (udiff/samplers.py). Their default steps and grids are measured, per
# process and schedule: samplers.defaults().

SAMPLERS = Registry("sampler", "udiff.samplers")
# steps and grid: each sampler's default, measured on the Gaussian oracle for every process and the vdm-linear,
# vp-linear and cosine schedules (docs/samplers.md; tests/test_defaults.py runs them).
SAMPLERS.declare("ancestral", "VDM's ancestral sampler: draws from the Gaussian posterior at every step",
                 steps=1024, grid="uniform")
SAMPLERS.declare("em", "Euler-Maruyama on the reverse-time SDE", steps=256, grid="uniform")
SAMPLERS.declare("ddim", "DDIM, deterministic for eta = 0", requires=("scalar",), steps=256, grid="edm")
SAMPLERS.declare("heun", "Heun's second-order method on the probability-flow ODE (EDM's)", steps=32, grid="edm")
SAMPLERS.declare("rk45", "adaptive Dormand-Prince on the probability-flow ODE", adaptive=True, steps=1,
                 grid="uniform")
SAMPLERS.declare("sscs", "symmetric splitting for phase-space processes (CLD/PSLD)",
                 requires=("splitting",), steps=100, grid="quadratic")
SAMPLERS.declare("edm", "EDM's stochastic Heun: noise added back (churn) before each Heun step", steps=32,
                 grid="edm")
SAMPLERS.declare("dpmpp-2m", "DPM-Solver++(2M), second-order multistep in log-SNR", requires=("scalar",),
                 steps=30, grid="edm")
SAMPLERS.declare("dpmpp-2m-sde", "DPM-Solver++(2M) for the reverse SDE, second-order multistep",
                 requires=("scalar",), steps=64, grid="edm")

GRIDS = Registry("time grid", "udiff.samplers")
GRIDS.declare("uniform", "uniform in t")
GRIDS.declare("quadratic", "PSLD's quadratic striding, fine near the data")
GRIDS.declare("edm", "EDM's rho-spacing in sigma/alpha, each group of components over its own range")

SSCS_SCORE_TIMES = ("start", "midpoint")

# ------------------------------------------------------------------------------------------------
# Training and networks

WEIGHTINGS = Registry("weighting", "udiff.losses")
WEIGHTINGS.declare("uniform", "plain epsilon-MSE")
WEIGHTINGS.declare("min-snr", "Min-SNR-5: min(SNR, 5)/SNR")
WEIGHTINGS.declare("vlb", "the whole variational bound per dim: 1/2 gamma' for VP, plus prior and "
                          "reconstruction; trains a learned schedule")
WEIGHTINGS.declare("edm", "EDM's: unit weight on the preconditioned network's target, (sigma^2 + sigma_data^2) / "
                          "sigma_data^2 on epsilon", requires=("scalar",))

TIMES = Registry("training time distribution", "udiff.losses")
TIMES.declare("stratified", "t uniform in [t_min, 1], low-discrepancy over the batch (VDM)")
TIMES.declare("log-normal", "EDM's: ln sigma ~ N(p_mean, p_std^2) with sigma = e^(gamma/2), truncated to the "
                            "schedule's range, low-discrepancy over the batch")

PRECONDS = Registry("preconditioning", "udiff.precond")
PRECONDS.declare("eps", "the network predicts epsilon")
PRECONDS.declare("edm", "EDM's c_skip, c_out, c_in: the network's errors stay bounded in x0", requires=("scalar",))

NET_COND = Registry("noise conditioning", None)
NET_COND.declare("gamma", "the mean -log SNR")
NET_COND.declare("t", "the time")
NET_COND.declare("gamma-map", "the whole gamma vector as input channels")

# ------------------------------------------------------------------------------------------------
# Likelihood and inpainting

NLL_METHODS = Registry("likelihood method", None)
NLL_METHODS.declare("vlb", "VDM's variational bound")
NLL_METHODS.declare("ode", "the probability-flow ODE's log-likelihood")

INPAINT_METHODS = Registry("inpainting method", None)
INPAINT_METHODS.declare("replace", "replace the known pixels after every step")
INPAINT_METHODS.declare("soft", "GUD soft conditioning: known components held at low noise")

MASKS = Registry("mask", None)
for _name, _doc in (("lower-half", "the lower half is unknown"), ("upper-half", "the upper half is unknown"),
                    ("left-half", "the left half is unknown"), ("right-half", "the right half is unknown"),
                    ("center", "the central square is unknown")):
    MASKS.declare(_name, _doc)

# ------------------------------------------------------------------------------------------------
# Sampling a density known up to a constant (udiff/dilation.py)

TARGET_SAMPLERS = Registry("target sampler", "udiff.dilation")
TARGET_SAMPLERS.declare("dilation-smc", "sequential Monte Carlo along the dilation path's tilted laws: weighted, "
                                        "resampled, with log Z", population=True)
TARGET_SAMPLERS.declare("dilation", "annealed Langevin on the dilation path")
TARGET_SAMPLERS.declare("ula", "plain Langevin at lambda = 1")
TARGET_SAMPLERS.declare("mala", "Metropolis-adjusted Langevin at lambda = 1")
TARGET_SAMPLERS.declare("convolution-mc", "annealed Langevin on the Gaussian-convolution path, importance-sampled "
                                          "scores")

LAMBDA_GRIDS = Registry("lambda grid", "udiff.dilation")
LAMBDA_GRIDS.declare("geometric", "log lambda linear in t")
LAMBDA_GRIDS.declare("log-quadratic", "log lambda = (1 - t)^2 log lambda_min: the contraction towards the origin "
                                      "fades linearly")
LAMBDA_GRIDS.declare("linear", "lambda linear in t")
LAMBDA_GRIDS.declare("cosine", "cosine in t")
