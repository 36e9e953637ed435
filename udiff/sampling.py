"""A trained model artifact with its [sample] settings, ready to draw from.

The steps `udiff sample MODEL` takes before it calls `samplers.generate`: load the model or checkpoint
artifact, apply `--set sample.*` overrides, choose EMA or raw weights, move it to the device, bf16 autocast
on CUDA. Commands that draw samples themselves (`udiff eval-fid MODEL -n N`) use this, so that their samples
are exactly those of `udiff sample` with the same seeds and settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import artifacts
from .build import model_from_artifact, recipe_of
from .samplers import generate


@dataclass
class ModelSampler:
    model: object
    rec: object          # the resolved recipe, overrides applied
    info: dict           # the training data's description (udiff.data)
    artifact: artifacts.Artifact
    ema: bool
    device: torch.device

    @classmethod
    def load(cls, path: str, overrides=(), no_ema: bool = False, device="cpu") -> "ModelSampler":
        """`overrides`: `section.key=value` items, [sample] keys only (the caller checks)."""
        return cls.of(artifacts.load(path, ("model", "checkpoint")), overrides, no_ema, device)

    @classmethod
    def of(cls, art: artifacts.Artifact, overrides=(), no_ema: bool = False, device="cpu") -> "ModelSampler":
        """The same for a loaded model or checkpoint artifact (a checkpoint samples mid-training)."""
        ema = recipe_of(art, overrides).sample.ema and not no_ema
        model, rec, info = model_from_artifact(art, overrides, ema=ema)
        dev = torch.device(device)
        model.prepare(dev)
        return cls(model, rec, info, art, ema, dev)

    def draw(self, seeds, progress=None):
        """One sample per seed, float32 (N, *event) in data space on the CPU, and what was run (`used`)."""
        s = self.rec.sample
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else None
        return generate(self.model, seeds, sampler=s.sampler, steps=s.steps, grid=s.grid, rho=s.rho, eta=s.eta,
                        t_end=s.t_end, denoise=s.denoise, batch_size=s.batch_size, device=self.device,
                        rtol=s.rtol, atol=s.atol, autocast=autocast, progress=progress)

    def describe(self, used: dict, seeds) -> dict:
        """What a result drawn with `draw` records about how its samples were made."""
        return {**used, "sampler": self.rec.sample.sampler, "ema": self.ema, "n": len(seeds),
                "model": self.artifact.meta.get("udiff.sha256")}
