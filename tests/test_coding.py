"""Bits-back compression (udiff/coding.py, `udiff compress`): exact round trips, the rate against the bound,
and one-line refusals of every file that is not a whole, intact one made with the given model."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import PYTHON, invoke, write
from safetensors.torch import load as st_load
from test_likelihood import DIGITS  # a tiny U-Net on the 8x8 digits, trained on the bound

from udiff import coding
from udiff import data as D

GAUSS = """
[data]
source = "digits"
[schedule]
kind = "vdm-linear"
[net]
kind = "gaussian"
[train]
steps = 0
checkpoint_every = 0
"""

PSLD = """
[data]
source = "digits"
[process]
kind = "psld"
[schedule]
kind = "vp-linear"
[net]
kind = "unet"
preset = "tiny-8"
channels = 8
num_blocks = 1
[train]
steps = 1
batch_size = 8
checkpoint_every = 0
"""


# sub-VP's own -log SNR is about 2 gamma at the data end: gamma_min = -6.65 gives VDM's range, -13.3 of it. On the
# VP-SDE schedule its SNR at t_min is 1e12, and the discrete bound's first step at T = 32 costs 1e8 bits/dim.
SUB_VP_RANGE = ["--set", "schedule.gamma_min=-6.65"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from click.testing import CliRunner

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("coding")
    out = {}
    tiny = ["--set", "train.steps=20", "--set", "train.batch_size=32", "--set", "train.lr=2e-3", "--set",
            "train.warmup=0"]
    for name, text, extra in (("tiny", DIGITS, tiny), ("other", DIGITS, tiny + ["--seed", "1"]), ("psld", PSLD, []),
                              ("gauss", GAUSS, []), ("gauss-ve", GAUSS, ["--set", "process.kind=ve"]),
                              ("gauss-sub-vp", GAUSS, ["--set", "process.kind=sub-vp", *SUB_VP_RANGE])):
        out[name] = str(d / f"{name}.safetensors")
        invoke(CliRunner(), ["train", write(d / f"{name}.toml", text), "-o", out[name], *extra])
    yield out
    torch.set_num_threads(threads)


def _model(path):
    from udiff import artifacts
    from udiff.build import model_from_artifact

    art = artifacts.load(path)
    return model_from_artifact(art)[0], art.meta["udiff.sha256"]


def test_round_trip_at_the_defaults(runner, models, tmp_path, one_thread):
    udz, dec = str(tmp_path / "d.udz"), str(tmp_path / "d.safetensors")
    r = invoke(runner, ["compress", models["tiny"], "digits", "--limit", "6", "-o", udz, "--json"])
    rec = json.loads(r.stdout)
    assert rec["n"] == 6 and rec["steps"] == 100 and rec["bytes"] == os.path.getsize(udz)
    assert rec["bits_per_dim"] == pytest.approx(8 * rec["bytes"] / (6 * 64))
    assert rec["first_item_extra_bits"] > 0 and rec["encode_items_per_second"] > 0
    assert rec["overhead_bits_per_dim"] == pytest.approx(rec["bits_per_dim"] - rec["vlb_bits_per_dim"])
    r = invoke(runner, ["compress", "-d", models["tiny"], udz, "-o", dec])
    assert r.stdout == "" and r.stderr.count("\n") == 1 and "bit-exactly" in r.stderr
    with open(dec, "rb") as fh:
        art = st_load(fh.read())
    assert torch.equal(art["images"], D.load("digits", 6).images)


def test_net_rate_is_the_discrete_bound(models, one_thread):
    """The stack grows by -log2 p(x, z) + log2 q(z | x) per image: the discrete-T bound in expectation. Without
    the scrambling of the bits each q-pop reads (a copy of p's errors) this closed-form model costs 8% more."""
    from udiff.likelihood import evaluate

    model, sha = _model(models["gauss"])
    images = D.load("digits", 150).images
    T = 32
    coded = coding.compress(model, images, sha, coding.Settings(steps=T))
    est = evaluate(model, images, image8=True, steps=T, repeats=T)
    net = coded.net_bits / (150 * 64)
    # the bound is about 9 bits/dim; the realized rate scatters by sqrt(2 KL) per image (docs/compression.md)
    assert abs(net - est.value) < 0.3, (net, est.value, est.terms)
    out, header, _ = coding.decompress(model, coded.blob, sha)
    assert torch.equal(out, images) and header.n == 150 and header.settings.steps == T


@pytest.mark.parametrize("name", ["gauss-ve", "gauss-sub-vp"])
def test_every_scalar_process_codes_at_its_bound(models, name, one_thread):
    """VE (prior N(0, sigma_max^2), no shrinking mean) and sub-VP code through the same chain as VP."""
    from udiff.likelihood import evaluate

    model, sha = _model(models[name])
    images = D.load("digits", 60).images
    T = 32
    coded = coding.compress(model, images, sha, coding.Settings(steps=T))
    est = evaluate(model, images, image8=True, steps=T, repeats=T)
    assert abs(coded.net_bits / (60 * 64) - est.value) < 0.3, (coded.net_bits / (60 * 64), est.value)
    out, _, _ = coding.decompress(model, coded.blob, sha)
    assert torch.equal(out, images)


def test_decoding_uses_the_encoders_threads(models, one_thread):
    """A batch's network output can depend on the CPU thread count: the file fixes it for the decoder."""
    model, sha = _model(models["tiny"])
    images = D.load("digits", 12).images
    coded = coding.compress(model, images, sha, coding.Settings(steps=6))
    torch.set_num_threads(2)
    out, header, _ = coding.decompress(model, coded.blob, sha)
    assert header.threads == 1 and torch.equal(out, images) and torch.get_num_threads() == 2


def test_batch_plan_grows_with_what_was_coded():
    for n, batch, growth in ((1, 64, 4), (40, 64, 4), (2000, 64, 4), (300, 7, 2)):
        sizes = coding.batch_plan(n, batch, growth)
        assert sum(sizes) == n and sizes[0] == 1 and max(sizes) <= batch
        done = 0
        for s in sizes:
            assert s <= max(1, done // growth)
            done += s
    assert coding.batch_plan(2000, 64, 4)[-2] == 64


def test_chain_is_the_bounds_grid_with_sheppards_correction(models):
    model, _ = _model(models["tiny"])
    T = 10
    chain = coding.Chain(model, coding.Settings(steps=T, cells=4), "cpu")
    t_min = float(model.schedule.t_min)
    times = torch.tensor([float(lv.t) for lv in chain.levels], dtype=torch.float64)
    assert torch.equal(times, t_min + (1.0 - t_min) * torch.arange(T + 1, dtype=torch.float64) / T)
    for i in range(1, T + 1):
        s, t = chain.levels[i - 1], chain.levels[i]
        c = -math.expm1(float(s.gamma) - float(t.gamma))
        sig2 = [float(torch.sigmoid(lv.gamma)) for lv in (s, t)]  # VP: sigma^2 = sigmoid(gamma)
        fwd = sig2[1] * c                                  # q(z_i | z_{i-1}) = N(a z_{i-1}, sigma_t^2 c)
        d = float(chain.delta[i].max())
        assert float(chain.q_std[i].max()) ** 2 == pytest.approx(fwd - d * d / 12, rel=1e-9)
        post = sig2[0] * c                                 # p(z_{i-1} | z_i): variance sigma_s^2 c
        assert float(chain.p_std[i - 1].max()) ** 2 == pytest.approx(post, rel=1e-9)
    for d, q, p in zip(chain.delta, chain.q_std, chain.p_std):
        e = torch.log2(d)
        assert torch.equal(e, torch.round(e)) and bool((d <= torch.minimum(q, p) / 4 * 1.0001).all())
        assert bool((d > torch.minimum(q, p) / 8 * 0.9999).all())


def _fails(runner, args, needle, tmp_path):
    before = set(os.listdir(tmp_path))
    r = invoke(runner, args, ok=False)
    assert r.exit_code == 2, r.output
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.output and set(os.listdir(tmp_path)) == before


def _repack(blob: bytes, words_edit) -> bytes:
    """A .udz file with its words changed and its digest made valid again (to reach the decoder's checks)."""
    header, words = coding.unpack(blob)
    return coding.pack(header, words_edit(words.copy()))


def test_few_dozen_round_trip_and_bad_files(runner, models, tmp_path, one_thread):
    """decode(encode(x)) == x; every damaged, foreign or mismatched file: one line, exit 2, nothing written."""
    udz, out = str(tmp_path / "ok.udz"), str(tmp_path / "out.safetensors")
    invoke(runner, ["compress", models["tiny"], "digits", "--limit", "40", "--steps", "10", "-o", udz,
                    "--vlb-repeats", "0"])
    invoke(runner, ["compress", "-d", models["tiny"], udz, "-o", out])
    with open(out, "rb") as fh:
        assert torch.equal(st_load(fh.read())["images"], D.load("digits", 40).images)
    os.unlink(out)
    with open(udz, "rb") as fh:
        blob = fh.read()

    def bad(name, data, needle, model="tiny"):
        path = str(tmp_path / name)
        with open(path, "wb") as fh:
            fh.write(data)
        _fails(runner, ["compress", "-d", models[model], path, "-o", out], needle, tmp_path)
        os.unlink(path)

    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x10
    bad("flipped.udz", bytes(flipped), "corrupted or truncated")
    bad("short.udz", blob[:-7], "corrupted or truncated")
    bad("header.udz", blob[:30], "corrupted or truncated")
    bad("magic.udz", b"PK" + blob[2:], "not a udiff compressed file")
    bad("v2.udz", blob[:4] + struct.pack("<H", coding.FORMAT + 1) + blob[6:], "format 2")
    bad("other.udz", blob, "compressed with model", model="other")

    def swap(w):
        w[len(w) // 2] ^= 0x00010000
        return w

    bad("deep.udz", _repack(blob, swap), "udiff: error")  # past the digest: the decoder's own checks refuse it
    bad("cut.udz", _repack(blob, lambda w: w[:-1]), "udiff: error")
    _fails(runner, ["compress", "-d", models["tiny"], str(tmp_path / "none.udz"), "-o", out], "no such file", tmp_path)


def test_bad_input_gives_one_line_and_writes_nothing(runner, models, tmp_path, gauss_file, one_thread):
    out = str(tmp_path / "x.udz")
    _fails(runner, ["compress", models["psld"], "digits", "-o", out], "one number per component", tmp_path)
    _fails(runner, ["compress", models["tiny"], "fashion-mnist:test", "--limit", "2", "-o", out],
           "trained on (1, 8, 8)", tmp_path)
    _fails(runner, ["compress", models["tiny"], f"tensors:{gauss_file}", "-o", out], "float data", tmp_path)
    _fails(runner, ["compress", models["tiny"], "digits", "-o", "-", "--json"], "choose one", tmp_path)
    _fails(runner, ["compress", "-d", models["tiny"], out, "--steps", "5", "-o", out], "--steps applies", tmp_path)
    _fails(runner, ["compress", "recipes/digits.toml", "digits", "-o", out], "is a recipe", tmp_path)


def test_pipeline_through_stdin_and_stdout(models, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    enc = subprocess.run([PYTHON, "-m", "udiff", "compress", models["tiny"], "digits", "--limit", "5", "--steps",
                          "4", "-o", "-", "--vlb-repeats", "0"], env=env, capture_output=True, check=True)
    assert enc.stdout[:4] == coding.MAGIC and enc.stderr.decode().count("\n") == 1
    dec = subprocess.run([PYTHON, "-m", "udiff", "compress", "-d", models["tiny"], "-", "-o", "-"], env=env,
                         input=enc.stdout, capture_output=True, check=True)
    assert torch.equal(st_load(dec.stdout)["images"], D.load("digits", 5).images)
    from udiff.cli import cli

    r = CliRunner().invoke(cli, ["compress", "-d", models["tiny"], "-", "-o", "-"], input=enc.stdout[:-3],
                           catch_exceptions=False)
    assert r.exit_code == 2 and r.stdout == "" and r.stderr.count("\n") == 1


def test_initial_words_are_a_function_of_seed_and_index():
    a, b = coding.initial_words(0, 100), coding.initial_words(0, 1000)
    assert np.array_equal(a[:-1], b[:99]) and a[-1] % 2 == 1 and not np.array_equal(a, coding.initial_words(1, 100))


def test_far_latents_escape_the_window_and_scrambling_is_its_own_inverse():
    words = coding.initial_words(3, 4096)
    stack = coding.Stack(words)
    n = torch.tensor([[0, 5, -8, 8, 9, 1000, -100000, 2**31 - 2]])
    mean, std, delta = torch.full(n.shape, 0.3, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64), 1.0
    stack.push(n, mean, std, delta, 8, escape=True)
    # six at or past the window's edge: the edge (about 24 bits) and 31 bits each
    assert 6 * 31 < stack.bits() - 32 * len(words) < 6 * (31 + 24) + 64
    stack.scramble(6.0, 100, 0, 2, 7)
    mid = stack.words()
    stack.scramble(6.0, 100, 0, 2, 7)
    stack.scramble(6.0, 100, 0, 2, 7)
    assert np.array_equal(stack.words(), mid)
    stack.scramble(6.0, 100, 0, 2, 7)
    assert torch.equal(stack.pop(mean, std, delta, 8, escape=True), n)
    assert np.array_equal(stack.words(), words)
    with pytest.raises(coding.UdiffError, match="outside its window"):
        stack.push(n, mean, std, delta, 8)


def test_samples_on_stdin_are_compressed(models, tmp_path, one_thread):
    from udiff import artifacts
    from udiff.cli import cli

    images = D.load("digits", 3).images
    piped = artifacts.to_bytes({"images": images}, "samples")
    udz = str(tmp_path / "s.udz")
    r = CliRunner().invoke(cli, ["compress", models["tiny"], "-", "--steps", "3", "-o", udz, "--vlb-repeats", "0"],
                           input=piped, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    model, sha = _model(models["tiny"])
    with open(udz, "rb") as fh:
        assert torch.equal(coding.decompress(model, fh.read(), sha)[0], images)


def test_a_network_that_is_not_finite_stops_with_exit_1(models, monkeypatch):
    model, sha = _model(models["tiny"])
    monkeypatch.setattr(model, "eps", lambda z, lvl: torch.full(z.shape, float("nan")))
    with pytest.raises(coding.NotFinite, match="not finite") as e:
        coding.compress(model, D.load("digits", 2).images, sha, coding.Settings(steps=3))
    assert e.value.exit_code == 1
