"""`udiff plot` and the training history: each picture is a valid image of plausible size, the schedule plot draws
exactly the schedule's γ values, and a resumed run's history continues without duplicates."""

import json
import math
import os

import pytest
import torch
from PIL import Image

from conftest import invoke, write
from udiff import artifacts

TINY = ["--set", "net.channels=8", "--set", "net.num_blocks=1", "--set", "train.batch_size=16"]


def _image(path, least=200):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert min(im.size) >= least and max(im.size) <= 4000, im.size
        return im.size


@pytest.mark.parametrize("recipe", ["@gud-dct-fashion", "@psld-digits", "@digits"])
def test_schedule_plot_draws_the_schedule(recipe, runner, tmp_path, one_thread):
    """The left panel's lines are -γ(t) of the drawn components, read back from the figure's Line2D objects."""
    if recipe == "@gud-dct-fashion" and not os.path.isdir("/usr/share/datasets/fashion-mnist"):
        pytest.skip("Fashion-MNIST is not installed")
    from udiff.cli.plot import model_for_schedule
    from udiff.figures import schedule_curves, schedule_figure

    model, _ = model_for_schedule(recipe)
    fig = schedule_figure(model)
    curves = schedule_curves(model)
    lines = fig.axes[0].get_lines()
    t = curves["t"]
    gamma = model.schedule.gamma(t).reshape(len(t), -1)[:, curves["components"]]  # straight from the schedule
    assert len(lines) == gamma.shape[1]
    for i, line in enumerate(lines):
        x, y = line.get_data()
        assert torch.allclose(torch.as_tensor(x, dtype=torch.float64), t)
        assert torch.allclose(torch.as_tensor(y, dtype=torch.float64), -gamma[:, i], atol=1e-9)
    if model.process.k == 2:  # phase space: the kernel's position and momentum variances, two lines each
        assert len(fig.axes[1].get_lines()) == 2 * gamma.shape[1]
    out = tmp_path / "s.png"
    invoke(runner, ["plot", "schedule", recipe, "-o", out])
    _image(out)


def test_history_is_kept_across_resumes_and_plotted(runner, tmp_path, one_thread):
    m = str(tmp_path / "m.safetensors")
    base = ["train", "@digits", "-o", m, "--set", "train.log_every=5", "--set", "train.checkpoint_every=10"] + TINY
    invoke(runner, base + ["--set", "train.steps=20"])
    first = [json.loads(line) for line in artifacts.load(m).meta["udiff.history"].splitlines()]
    assert [r["step"] for r in first] == [5, 10, 15, 20]
    invoke(runner, base + ["--set", "train.steps=30"])  # resumes at 20 from the checkpoint
    rows = [json.loads(line) for line in artifacts.load(m).meta["udiff.history"].splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30] and rows[:4] == first
    assert all(r["loss"] > 0 and r["grad_norm"] > 0 and r["lr"] > 0 and r["images_per_second"] > 0 for r in rows)
    fresh = str(tmp_path / "fresh.safetensors")
    invoke(runner, ["train", "@digits", "-o", fresh, "--set", "train.log_every=5", "--set", "train.steps=30"] + TINY)
    again = [json.loads(line) for line in artifacts.load(fresh).meta["udiff.history"].splitlines()]
    assert [r["loss"] for r in again] == pytest.approx([r["loss"] for r in rows], rel=1e-5)  # resume = one run
    r = invoke(runner, ["train", "@digits", "-o", m, "--json", "--set", "train.log_every=5",
                        "--set", "train.checkpoint_every=10", "--set", "train.steps=30"] + TINY)
    done = json.loads(r.stdout)  # a finished run: valid JSON, the last logged loss, no rate
    assert done["loss"] == pytest.approx(rows[-1]["loss"]) and done["images_per_second"] is None
    for ext in ("png", "svg", "pdf"):
        out = tmp_path / f"h.{ext}"
        invoke(runner, ["plot", "history", m, "-o", out])
        head = open(out, "rb").read(8)
        assert head.startswith({"png": b"\x89PNG", "svg": b"<?xml", "pdf": b"%PDF"}[ext])
    _image(tmp_path / "h.png")


def test_history_of_the_bound_in_bits_per_dim(runner, tmp_path, one_thread):
    """weighting = "vlb" on 8-bit images: the loss is the bound in nats/dim; the history has it in bits/dim too."""
    m = str(tmp_path / "m.safetensors")
    invoke(runner, ["train", "@digits", "-o", m, "--set", "train.log_every=5", "--set", "train.steps=10",
                    "--set", "train.weighting=\"vlb\"", "--set", "train.checkpoint_every=0"] + TINY)
    rows = [json.loads(line) for line in artifacts.load(m).meta["udiff.history"].splitlines()]
    assert [r["step"] for r in rows] == [5, 10]
    assert all(r["bits_per_dim"] == pytest.approx(r["loss"] / math.log(2)) for r in rows)
    plain = str(tmp_path / "plain.safetensors")
    invoke(runner, ["train", "@digits", "-o", plain, "--set", "train.log_every=5", "--set", "train.steps=5",
                    "--set", "train.checkpoint_every=0"] + TINY)
    assert "bits_per_dim" not in json.loads(artifacts.load(plain).meta["udiff.history"].splitlines()[0])


def test_nll_and_samples_plots(runner, tmp_path, one_thread):
    m = str(tmp_path / "g.safetensors")
    invoke(runner, ["train", write(tmp_path / "g.toml", '[data]\nsource = "digits"\n[net]\nkind = "gaussian"\n'),
                    "-o", m])
    nll = tmp_path / "nll.json"
    nll.write_text(invoke(runner, ["eval-nll", m, "--data", "digits", "--limit", "32", "--repeats", "2",
                                   "--json"]).stdout)
    dens = json.loads(nll.read_text())["diffusion_density"]
    assert len(dens["t"]) == len(dens["share"]) + 1 == 32 * 2 // 16 + 1  # 16 draws a bin at least
    invoke(runner, ["plot", "nll", nll, "-o", tmp_path / "nll.png"])
    wide = _image(tmp_path / "nll.png")
    record = {k: v for k, v in json.loads(nll.read_text()).items() if k != "diffusion_density"}
    (tmp_path / "bare.json").write_text(json.dumps(record))  # an older record without the density: the bars alone
    invoke(runner, ["plot", "nll", tmp_path / "bare.json", "-o", tmp_path / "bare.png"])
    assert _image(tmp_path / "bare.png") < wide
    s = str(tmp_path / "s.safetensors")
    invoke(runner, ["sample", m, "-n", "16", "--steps", "8", "-o", s])
    invoke(runner, ["plot", "samples", s, "-o", tmp_path / "s.png"])
    assert _image(tmp_path / "s.png", least=250)  # a 4×4 grid of 8×8 digits, enlarged
    t = str(tmp_path / "t.safetensors")
    invoke(runner, ["sample", "@dilation-gmm", "-n", "300", "--steps", "100", "-o", t])
    invoke(runner, ["plot", "samples", t, "-o", tmp_path / "t.png", "--dims", "1,0"])
    _image(tmp_path / "t.png")


def test_plot_refuses_bad_inputs(runner, tmp_path):
    for args, needle in ((["plot", "schedule", "@digits", "-o", tmp_path / "x.gif"], "end the name with .png"),
                         (["plot", "history", tmp_path / "none.safetensors", "-o", tmp_path / "h.png"], "no such file"),
                         (["plot", "nll", write(tmp_path / "n.json", "{}"), "-o", tmp_path / "n.png"], "'bpd'")):
        before = sorted(os.listdir(tmp_path))
        r = invoke(runner, args, ok=False)
        assert r.exit_code == 2 and needle in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert sorted(os.listdir(tmp_path)) == before
