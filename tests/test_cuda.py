"""CUDA paths: training with bf16 autocast and torch.compile, sampling, the oracle on the GPU.

Skipped without a CUDA device (CI has none); run on a GPU machine with `python -m pytest -q -m cuda`.
"""

import os

import pytest
import torch

from conftest import RECIPES, invoke, write
from udiff import artifacts

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_gaussian_oracle_on_the_gpu(runner, tmp_path, gauss_file):
    recipe = write(tmp_path / "g.toml", f'[data]\nsource = "tensors:{gauss_file}"\n[schedule]\nkind = "vp-linear"\n'
                                        '[net]\nkind = "gaussian"\n')
    model, out = str(tmp_path / "m.safetensors"), str(tmp_path / "s.safetensors")
    invoke(runner, ["train", recipe, "-o", model, "--device", "cuda"])
    invoke(runner, ["sample", model, "-n", "20000", "--sampler", "heun", "--steps", "64", "-o", out,
                    "--device", "cuda", "--batch-size", "20000"])
    x = artifacts.load(out, "samples").tensors["x"].double()
    from safetensors.torch import load_file

    ref = load_file(gauss_file)["x"].double()
    assert _rel(x.mean(0), ref.mean(0)) < 0.05
    assert _rel(torch.cov(x.T), torch.cov(ref.T)) < 0.05


def test_unet_trains_compiled_in_bf16_and_resumes(runner, tmp_path):
    """The default CUDA path (bf16 autocast, torch.compile, fused AdamW) runs, lowers the loss, and resumes."""
    model = str(tmp_path / "m.safetensors")
    args = ["train", os.path.join(RECIPES, "digits.toml"), "-o", model, "--device", "cuda", "--json",
            "--set", "train.steps=300", "--set", "train.checkpoint_every=150"]
    import json

    res = json.loads(invoke(runner, args).stdout)
    assert res["loss"] < 0.5 and res["device"].startswith("cuda")
    art = artifacts.load(model, "model")
    assert all(torch.isfinite(v).all() for v in art.tensors.values() if v.is_floating_point())
    out = str(tmp_path / "s.safetensors")
    invoke(runner, ["sample", model, "--seeds", "0-15", "-o", out, "--device", "cuda", "--steps", "50"])
    imgs = artifacts.load(out, "samples").tensors["images"]
    assert imgs.shape == (16, 1, 8, 8) and imgs.float().std() > 10  # not a constant picture
    # Raising steps continues from the checkpoint written at the end of the first run.
    more = json.loads(invoke(runner, args[:-3] + ["--set", "train.steps=320", "--set",
                                                  "train.checkpoint_every=150"]).stdout)
    assert more["start_step"] == 300 and more["steps"] == 320


def test_samples_on_the_gpu_do_not_depend_on_batch_size(runner, tmp_path):
    model = str(tmp_path / "m.safetensors")
    invoke(runner, ["train", os.path.join(RECIPES, "digits.toml"), "-o", model, "--device", "cuda",
                    "--set", "train.steps=20", "--set", "train.compile=false"])
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    common = ["--seeds", "0-7", "--steps", "20", "--device", "cuda", "--sampler", "ddim"]
    invoke(runner, ["sample", model, *common, "--batch-size", "8", "-o", a])
    invoke(runner, ["sample", model, *common, "--batch-size", "3", "-o", b])
    xa, xb = (artifacts.load(p, "samples").tensors["images"].int() for p in (a, b))
    # bf16 kernels may pick other algorithms per batch size: allow an off-by-a-few pixel value, no more
    assert (xa - xb).abs().float().mean() < 2.0


def test_per_sample_noise_is_the_cpus_on_the_gpu():
    """The per-seed contract across devices: the integer hash is bit-identical, the normals (float32
    log/sin/cos of the same uniforms) agree to a few ulps."""
    from udiff.rng import NoiseSource

    seeds = [0, 1, 7, 2**32 - 1, 123456789]
    cpu, gpu = NoiseSource(seeds), NoiseSource(seeds, device="cuda")
    assert torch.equal(cpu._bits(3, 1001), gpu._bits(3, 1001).cpu())
    a, b = cpu(5, (3, 7, 7)), gpu(5, (3, 7, 7)).cpu()
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_ddpmpp_samples_in_bf16_under_inference_mode(tmp_path):
    """EDM's DDPM++ network (the default preset at 32x32x3) samples on the default CUDA path: finite, and
    the same images whatever the batch size up to bf16's rounding."""
    from udiff import recipe as R
    from udiff.build import build_model
    from udiff.samplers import Plan, generate

    rec = R.loads('[data]\nsource = "tensors:x"\n[schedule]\nkind = "vp-linear"\n[net]\nkind = "unet"\n', [])
    model = build_model(rec, {"shape": [3, 32, 32]}).prepare(torch.device("cuda")).eval()
    ac = torch.autocast("cuda", dtype=torch.bfloat16)
    plan = Plan(sampler="heun", steps=4)
    a, _ = generate(model, range(6), plan, batch_size=6, device="cuda", autocast=ac)
    b, _ = generate(model, range(6), plan, batch_size=4, device="cuda", autocast=ac)
    assert a.shape == (6, 3, 32, 32) and torch.isfinite(a).all()
    assert (a - b).abs().mean() < 0.02
