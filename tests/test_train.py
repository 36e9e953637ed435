"""Training: resume gives the same weights as an uninterrupted run; the loop really learns."""

import os
import signal
import subprocess
import time

import pytest
import torch

from conftest import PYTHON, gaussian_data, invoke, write
from safetensors.torch import save_file
from udiff import artifacts

MLP_RECIPE = """
[data]
source = "tensors:{path}"
[schedule]
kind = "vp-linear"
[net]
kind = "mlp"
hidden = 64
depth = 2
dropout = 0.1
[train]
steps = {steps}
batch_size = 64
lr = 3e-3
warmup = 10
ema = 0.9
checkpoint_every = {every}
"""


@pytest.fixture(scope="module")
def small_gauss(tmp_path_factory):
    p = tmp_path_factory.mktemp("small") / "g4.safetensors"
    save_file({"x": gaussian_data(512, d=4)}, str(p))
    return str(p)


def _weights(path):
    t = artifacts.load(path, "model").tensors
    return {k: v for k, v in t.items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_extending_steps_equals_one_long_run(small_gauss, runner, tmp_path):
    rec = write(tmp_path / "r.toml", MLP_RECIPE.format(path=small_gauss, steps=12, every=4))
    full, part = str(tmp_path / "full.safetensors"), str(tmp_path / "part.safetensors")
    invoke(runner, ["train", rec, "-o", full])
    invoke(runner, ["train", rec, "-o", part, "--set", "train.steps=5"])
    r = invoke(runner, ["train", rec, "-o", part, "--json"])
    assert '"start_step": 5' in r.stdout
    assert _same(_weights(full), _weights(part))
    # and two fresh runs are identical
    again = str(tmp_path / "again.safetensors")
    invoke(runner, ["train", rec, "-o", again])
    assert _same(_weights(full), _weights(again))


def test_killed_run_resumes_to_the_same_weights(small_gauss, runner, tmp_path):
    """A real process is killed mid-run; rerunning the same command finishes it identically."""
    rec = write(tmp_path / "r.toml", MLP_RECIPE.format(path=small_gauss, steps=1500, every=100))
    ref = str(tmp_path / "ref.safetensors")
    invoke(runner, ["train", rec, "-o", ref])
    out = str(tmp_path / "model.safetensors")
    ckpt = str(tmp_path / "model.ckpt.safetensors")
    cmd = [PYTHON, "-m", "udiff", "train", rec, "-o", out]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not os.path.exists(ckpt) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the run finished before it could be interrupted; raise its steps"
    assert not os.path.exists(out)  # no half-written model
    step = int(artifacts.load(ckpt, "checkpoint").meta["udiff.step"])
    assert 0 < step < 1500
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _same(_weights(ref), _weights(out))


def test_changed_recipe_refuses_to_resume(small_gauss, runner, tmp_path):
    rec = write(tmp_path / "r.toml", MLP_RECIPE.format(path=small_gauss, steps=4, every=2))
    out = str(tmp_path / "m.safetensors")
    invoke(runner, ["train", rec, "-o", out])
    r = invoke(runner, ["train", rec, "-o", out, "--set", "train.lr=1e-4"], ok=False)
    assert r.exit_code == 2
    assert "checkpoint of a different recipe ([train] lr 0.003 vs 0.0001); pass --fresh" in r.stderr
    invoke(runner, ["train", rec, "-o", out, "--set", "train.lr=1e-4", "--fresh"])


def test_training_approaches_the_bayes_optimal_loss(tmp_path):
    """On Gaussian data the exact denoiser attains the lowest possible epsilon-MSE: a trained MLP must get
    close to it, and far below an untrained one."""
    from udiff import recipe as R
    from udiff.build import build_model
    from udiff.data import Dataset
    from udiff.losses import diffusion_loss
    from udiff.train import train

    x = gaussian_data(4096, d=4)
    ds = Dataset("tensors:x", x=x)
    rec = R.loads(MLP_RECIPE.format(path="x", steps=600, every=0), ["train.batch_size=256", "net.dropout=0.0",
                                                                     "train.ema=0.0", "net.hidden=128"])
    torch.manual_seed(0)
    net = build_model(rec, {"shape": [4]})
    exact = build_model(R.loads('[data]\nsource = "x"\n[schedule]\nkind = "vp-linear"\n[net]\nkind = "gaussian"'),
                        {"shape": [4]}).fit(x)
    g = torch.Generator().manual_seed(5)
    xe = gaussian_data(4096, d=4, seed=0)[:, None]
    t = 0.05 + 0.95 * torch.rand(4096, generator=g, dtype=torch.float64)
    e = torch.randn(4096, 1, 4, generator=g)

    def loss(m):
        with torch.no_grad():
            return float(diffusion_loss(m.eval(), xe, t, e).mean())

    before = loss(net)
    train(net, ds, rec, device="cpu", out_path="-", data_info={"sha256": "x"})
    after, best = loss(net), loss(exact)
    assert best < after < before
    assert after < best * 1.1, (before, after, best)


def test_a_checkpoint_samples_like_its_model(small_gauss, runner, tmp_path):
    """`udiff sample` accepts the checkpoint of a run: EMA parameters, raw buffers (basis, schedule)."""
    rec = write(tmp_path / "r.toml", MLP_RECIPE.format(path=small_gauss, steps=6, every=3)
                + "\n[basis]\nwhiten = true\n")
    out = str(tmp_path / "m.safetensors")
    invoke(runner, ["train", rec, "-o", out])
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    invoke(runner, ["sample", out, "--seeds", "0-3", "-o", a])
    invoke(runner, ["sample", str(tmp_path / "m.ckpt.safetensors"), "--seeds", "0-3", "-o", b])
    xa, xb = (artifacts.load(p, "samples").tensors["x"] for p in (a, b))
    assert torch.equal(xa, xb)
