"""Preconditioning: what the network sees and what its output means ([net] precond).

    eps   the network sees the state as it is and predicts ε of the predicted slots (DDPM, VDM, PSLD).
    edm   EDM's preconditioning (Karras et al. 2022, Table 1) for processes with one number per component: in
          u = z/h, σ = √Σ/h (the VE form of any k = 1 process, conversions.ode_time) the network F sees
          c_in u with c_in = 1/√(σ² + σ_d²) and the denoiser is D = c_skip u + c_out F, c_skip = σ_d²/(σ² + σ_d²),
          c_out = σ σ_d/√(σ² + σ_d²). Then ε̂ = (u − D)/σ. Its errors stay bounded in x0 at every noise
          level, where an ε-network's errors grow like σ in x0 (they make deterministic samplers noisy).

The network's noise label is the same for both (nets.embeddings.noise_label of the mean γ).
"""

from __future__ import annotations

from . import conversions as C
from .registry import PRECONDS


class Preconditioner:
    name = "eps"
    sigma_data = None

    def inputs(self, process, z, lvl):
        """The state fed to the network (component space, the state's slots)."""
        return z

    def eps(self, process, z, out, lvl):
        """ε̂ of the predicted slots from the network's output (component space)."""
        return out


@PRECONDS.implements("eps")
class EpsPrediction(Preconditioner):
    def __init__(self, sigma_data: float = 0.5):
        pass


def _scalings(process, lvl, sigma_data: float):
    """(h, σ, c_in, c_skip, c_out), each (Bt, 1, *e) float64: EDM's Table 1 in u = z/h, σ = √Σ/h."""
    h = process.mean_map(lvl)[..., 0, 0].unsqueeze(1)
    sigma = C.ode_time(process, lvl)
    total = sigma.square() + sigma_data ** 2
    return h, sigma, total.rsqrt(), sigma_data ** 2 / total, sigma * sigma_data * total.rsqrt()


@PRECONDS.implements("edm")
class EDMPrecond(Preconditioner):
    name = "edm"

    def __init__(self, sigma_data: float = 0.5):
        self.sigma_data = float(sigma_data)

    def inputs(self, process, z, lvl):
        h, _, c_in, _, _ = _scalings(process, lvl, self.sigma_data)
        return z * (c_in / h).to(z.dtype)

    def eps(self, process, z, out, lvl):
        h, sigma, _, c_skip, c_out = _scalings(process, lvl, self.sigma_data)
        u = z.double() / h
        denoised = c_skip * u + c_out * out.double()  # D = c_skip u + c_out F (EDM eq. 7)
        return ((u - denoised) / sigma).to(out.dtype)
