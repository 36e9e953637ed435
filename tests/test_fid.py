"""eval-fid on the CPU with extractors made here: closed-form Fréchet distances, saved references, the
classifier extractor, the inception path with made-up weights, and one-line errors.

The extractors of this file are tiny and untrained (a fixed random projection, a classifier trained for a
few dozen steps on the 8x8 digits, an Inception-v3 with random weights): they test the arithmetic and the
plumbing, not what a good feature space is.
"""

import hashlib
import json
import os
import subprocess

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from conftest import PYTHON, RECIPES, invoke, write
from udiff import artifacts
from udiff import data as D
from udiff import fid

CLASSIFIER = """
[data]
source = "digits"
[net]
kind = "classifier"
channels = 4
features = 8
[train]
steps = 80
batch_size = 64
lr = 5e-3
warmup = 10
"""


# ---------------------------------------------------------------------------------------------------
# A test-made extractor: features = tanh(W x) of the pixels x in [-1, 1], W a fixed random 12 x 64 matrix.

PROJ = torch.randn(12, 64, generator=torch.Generator().manual_seed(5), dtype=torch.float64) / 8


class Projection(fid.Features):
    FEATURES = ("proj",)

    def __init__(self, name, features_list, nan=False, **kwargs):
        super().__init__(name, features_list)
        self.nan = nan

    def forward(self, x):
        h = torch.tanh((x.reshape(len(x), -1).double() / 127.5 - 1) @ PROJ.T).float()
        return (h * float("nan") if self.nan else h,)


if "test-projection" not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor("test-projection", Projection)


def _projection(arg, weights):
    return fid.Extractor("projection" + (":" + arg if arg else ""), "projection", "test-projection", "proj",
                         "0" * 64, "raw pixels", kwargs=lambda: {"nan": arg == "nan"})


fid.register_extractor("projection")(_projection)


def projection_features(images: torch.Tensor) -> np.ndarray:
    """The same features in float64, computed here."""
    return np.tanh((images.reshape(len(images), -1).double().numpy() / 127.5 - 1) @ PROJ.numpy().T)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The closed-form Fréchet distance of two Gaussians fitted to feature sets, in float64 (scipy's sqrtm)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


# ---------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Digits images as tensors files: a set, a shifted copy, a lower-contrast copy; a tiny classifier."""
    from click.testing import CliRunner

    d = tmp_path_factory.mktemp("fid")
    ds = D.load("digits")
    base = ds.images[:600].clamp(max=200)
    files = {}
    contrast = (base.float() * 0.6 + 50).round().to(torch.uint8)
    for name, imgs in {"base": base, "shifted": base + 40, "contrast": contrast,
                       "small": torch.zeros(10, 1, 6, 6, dtype=torch.uint8)}.items():
        files[name] = str(d / f"{name}.safetensors")
        save_file({"images": imgs.contiguous()}, files[name])
    rec = write(d / "clf.toml", CLASSIFIER)
    clf = str(d / "clf.safetensors")
    r = invoke(CliRunner(), ["train", rec, "-o", clf, "--json"])
    return {"dir": d, "files": files, "images": {"base": base, "shifted": base + 40}, "clf": clf,
            "clf_json": json.loads(r.stdout)}


def _eval(runner, *args, ok=True):
    r = invoke(runner, ["eval-fid", *args, "--json"], ok=ok)
    return json.loads(r.stdout) if ok else r


def _fails(runner, args, needle, tmp_path, code=2):
    before = set(os.listdir(tmp_path))
    r = invoke(runner, args, ok=False)
    assert r.exit_code == code, r.output
    assert r.stderr.count("\n") == 1 and needle in r.stderr, r.stderr
    assert "Traceback" not in r.output
    assert set(os.listdir(tmp_path)) == before  # nothing written
    return r


# ---------------------------------------------------------------------------------------------------
# The arithmetic


def test_fd_of_a_set_against_itself_is_zero(runner, work):
    t = "tensors:" + work["files"]["base"]
    for ext in ("projection", "classifier:" + work["clf"]):
        r = _eval(runner, t, "--ref", t, "--extractor", ext)
        assert abs(r["fid"]) < 1e-6 and r["n_samples"] == r["n_ref"] == 600


@pytest.mark.parametrize("other", ["shifted", "contrast"])
def test_fd_equals_the_closed_form_frechet_distance(runner, work, other):
    """A shifted copy (same covariance of the pixels) and a lower-contrast one (a different covariance): the
    reported FD is the float64 closed form of the two feature sets, computed here with scipy's sqrtm."""
    a, b = (D.load("tensors:" + work["files"][k]).images for k in ("base", other))
    want = frechet(projection_features(a), projection_features(b))
    r = _eval(runner, "tensors:" + work["files"][other], "--ref", "tensors:" + work["files"]["base"],
              "--extractor", "projection")
    assert want > 0.05
    assert r["fid"] == pytest.approx(want, rel=1e-4)
    assert r["feature_dim"] == 12 and r["feature_layer"] == "proj"


def test_a_saved_reference_gives_the_same_numbers(runner, work, tmp_path):
    ref = "tensors:" + work["files"]["base"]
    ext = ["--extractor", "classifier:" + work["clf"], "--metrics", "fid,kid,prc"]
    stats = str(tmp_path / "ref.safetensors")
    raw = _eval(runner, "tensors:" + work["files"]["contrast"], "--ref", ref, *ext, "--save-ref", stats)
    again = _eval(runner, "tensors:" + work["files"]["contrast"], "--ref", stats, *ext)
    for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "ref_sha256", "n_ref", "samples_sha256"):
        assert again[key] == raw[key], key
    assert raw["fid"] > 0.01 and 0 <= raw["precision"] <= 1 and raw["kid_subset_size"] == 600
    art = artifacts.load(stats, "stats")
    meta = art.json("udiff.stats")
    assert meta["n"] == 600 and meta["features"] and meta["shape"] == [1, 8, 8]
    assert meta["extractor_sha256"] == raw["extractor_sha256"] == artifacts.load(work["clf"]).meta["udiff.sha256"]
    assert art.json("udiff.result")["fid"] == raw["fid"]
    assert art.tensors["mu"].dtype == torch.float32 and art.tensors["sigma"].dtype == torch.float64
    # FID-only statistics keep no features; KID from them says what to do
    fid_only = str(tmp_path / "fid-only.safetensors")
    _eval(runner, ref, "--ref", ref, "--extractor", "classifier:" + work["clf"], "--save-ref", fid_only)
    assert "features" not in artifacts.load(fid_only).tensors
    _fails(runner, ["eval-fid", ref, "--ref", fid_only, "--extractor", "classifier:" + work["clf"], "--metrics",
                    "kid"], "hold no features", tmp_path)
    # statistics of another extractor are refused
    _fails(runner, ["eval-fid", ref, "--ref", stats, "--extractor", "projection"], "recompute them", tmp_path)


def test_the_numbers_are_torch_fidelitys_calculate_metrics(work):
    """udiff calls the functions calculate_metrics calls; the same inputs give the same numbers."""
    import torch_fidelity

    from udiff.build import classifier_from_artifact

    net, _ = classifier_from_artifact(artifacts.load(work["clf"]))
    real, fake = (D.load("tensors:" + work["files"][k]).images for k in ("base", "contrast"))
    ext = fid.extractor("classifier:" + work["clf"])
    module = ext.build("cpu")
    s_fake = fid.measure(module, ext, fid.image_set("fake", fake)).stats
    s_real = fid.measure(module, ext, fid.image_set("real", real)).stats
    ours = fid.compare(s_fake, s_real, fid.REF_METRICS)
    theirs = torch_fidelity.calculate_metrics(
        input1=fid._Images(fake, lambda x: x), input2=fid._Images(real, lambda x: x), fid=True, kid=True, prc=True,
        feature_extractor=fid.CLASSIFIER_NAME, net=net, cuda=False, cache=False, verbose=False, save_cpu_ram=True,
        batch_size=ext.batch_size, kid_subset_size=600)
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-9)
    assert ours["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-9)
    assert (ours["precision"], ours["recall"]) == (theirs["precision"], theirs["recall"])


# ---------------------------------------------------------------------------------------------------
# Class accuracy of labelled samples


def _predicted(clf_path, images):
    """The classifier's class of each image, computed here from its network."""
    from udiff.build import classifier_from_artifact
    from udiff.data import to_unit

    net, _ = classifier_from_artifact(artifacts.load(clf_path))
    with torch.no_grad():
        return net(to_unit(images)).argmax(1)


def _hand_accuracy(pred, labels, classes=10):
    per = [float((pred[labels == k] == k).double().mean()) if (labels == k).any() else None for k in range(classes)]
    return float((pred == labels).double().mean()), per


def test_accuracy_is_the_share_of_samples_the_classifier_puts_in_their_class(runner, work, tmp_path):
    """Labels from a tensors file: the true digits, and the same images with every label moved up by one
    (most are then wrong, and class 0 holds no item); the reported accuracy, overall and per class, is the one
    computed here from the classifier's own outputs."""
    ds = D.load("digits")
    images, labels = ds.images[:600].contiguous(), ds.labels[:600]
    pred = _predicted(work["clf"], images)
    for name, lab in {"true": labels, "moved": (labels + 1).clamp(max=9)}.items():
        path = str(tmp_path / f"{name}.safetensors")
        save_file({"images": images, "labels": lab.contiguous()}, path)
        r = _eval(runner, "tensors:" + path, "--extractor", "classifier:" + work["clf"], "--metrics", "accuracy")
        want, per = _hand_accuracy(pred, lab)
        assert r["accuracy"] == pytest.approx(want, abs=1e-12)
        assert r["accuracy_per_class"] == pytest.approx(per, abs=1e-12)
        assert r["n_per_class"] == torch.bincount(lab, minlength=10).tolist() and "fid" not in r
    assert r["accuracy_per_class"][0] is None  # no item is labelled 0 after the move
    # with a reference, fid and accuracy in one call; a data source brings its labels (the classifier's accuracy)
    both = _eval(runner, "digits", "--ref", "tensors:" + work["files"]["base"], "--extractor",
                 "classifier:" + work["clf"], "--metrics", "fid,accuracy")
    assert both["fid"] > 0 and both["accuracy"] == pytest.approx(
        _hand_accuracy(_predicted(work["clf"], ds.images), ds.labels)[0], abs=1e-12)
    assert both["accuracy"] > 0.5  # the tiny classifier does learn the digits


def test_accuracy_of_class_conditional_samples_end_to_end(runner, work, tmp_path):
    """udiff sample --labels writes the labels; eval-fid judges the images against them."""
    model = str(tmp_path / "cond.safetensors")
    rec = write(tmp_path / "cond.toml", '[data]\nsource = "digits"\n[schedule]\nkind = "vp-linear"\n[net]\n'
                                        'kind = "gaussian"\nclasses = 10\n')
    invoke(runner, ["train", rec, "-o", model])
    samples = str(tmp_path / "s.safetensors")
    invoke(runner, ["sample", model, "--seeds", "0-99", "--labels", ",".join(f"{k}*10" for k in range(10)),
                    "--steps", "16", "-o", samples])
    art = artifacts.load(samples, "samples")
    r = _eval(runner, samples, "--extractor", "classifier:" + work["clf"], "--metrics", "accuracy")
    want, _ = _hand_accuracy(_predicted(work["clf"], art.tensors["images"]), art.tensors["labels"])
    assert r["accuracy"] == pytest.approx(want, abs=1e-12) and r["n_samples"] == 100
    assert r["n_per_class"] == [10] * 10


def test_accuracy_bad_input(runner, work, tmp_path):
    base = "tensors:" + work["files"]["base"]  # images without labels
    _fails(runner, ["eval-fid", base, "--extractor", "classifier:" + work["clf"], "--metrics", "accuracy"],
           "carry no labels", tmp_path)
    _fails(runner, ["eval-fid", "digits", "--extractor", "projection", "--metrics", "accuracy"],
           "use --extractor classifier:PATH", tmp_path)
    _fails(runner, ["eval-fid", "digits", "--extractor", "classifier:" + work["clf"]], "give --ref REF", tmp_path)
    _fails(runner, ["eval-fid", "digits", "--ref", "digits", "--extractor", "classifier:" + work["clf"], "--metrics",
                    "accuracy", "--save-ref", str(tmp_path / "s.safetensors")], "one of those metrics", tmp_path)
    bad = str(tmp_path / "bad.safetensors")
    ds = D.load("digits")
    save_file({"images": ds.images[:20].contiguous(), "labels": torch.full((20,), 12)}, bad)
    _fails(runner, ["eval-fid", "tensors:" + bad, "--extractor", "classifier:" + work["clf"], "--metrics", "accuracy"],
           "knows classes 0 ... 9", tmp_path)


# ---------------------------------------------------------------------------------------------------
# The classifier


def test_the_classifier_reports_its_held_out_accuracy(work):
    from udiff import classify
    from udiff.build import classifier_from_artifact

    r = work["clf_json"]
    assert r["n_test"] == 180 and r["n_train"] == 1617 and "held out" in r["test_source"]
    assert r["test_accuracy"] > 0.5  # ten classes: 0.1 by chance, and with labels out of step with images
    art = artifacts.load(work["clf"], "classifier")
    net, meta = classifier_from_artifact(art)
    assert meta["test_accuracy"] == r["test_accuracy"] and meta["classes"] == 10
    ds = D.load("digits")
    held = D.Dataset("digits", images=ds.images[-180:], labels=ds.labels[-180:])
    assert classify.accuracy(net, held) == r["test_accuracy"]
    feats = net.features(D.to_unit(ds.images[:5]))
    assert feats.shape == (5, 8)


def test_classifier_training_reports_progress_lines(monkeypatch):
    """Off a terminal (a makefile, a log file) classifier training reports lines, as diffusion training does."""
    import functools

    from udiff import classify
    from udiff import recipe as R
    from udiff.build import build_classifier
    from udiff.train import LossLog

    monkeypatch.setattr(classify, "LossLog", functools.partial(LossLog, report_every=0.0))
    rec = R.from_dict({"data": {"source": "digits"}, "net": {"kind": "classifier", "channels": 4, "features": 8},
                       "train": {"steps": 6, "batch_size": 16, "log_every": 2}})
    ds = D.load("digits")
    lines = []
    classify.fit(build_classifier(rec.net, (1, 8, 8), 10), ds, ds, "digits", rec.train, report=lines.append)
    assert [line.split(",")[0] for line in lines] == ["classifier training: step 2/6", "classifier training: step 4/6"]
    assert all("img/s" in line for line in lines)


def test_a_classifier_needs_labels(runner, tmp_path, gauss_file):
    rec = write(tmp_path / "c.toml", CLASSIFIER.replace('"digits"', f'"tensors:{gauss_file}"'))
    _fails(runner, ["train", rec, "-o", str(tmp_path / "c.safetensors")], "8-bit images", tmp_path)
    p = str(tmp_path / "unlabelled.safetensors")
    save_file({"images": torch.zeros(20, 1, 8, 8, dtype=torch.uint8)}, p)
    rec = write(tmp_path / "c.toml", CLASSIFIER.replace('"digits"', f'"tensors:{p}"'))
    _fails(runner, ["train", rec, "-o", str(tmp_path / "c.safetensors")], "has no labels", tmp_path)


# ---------------------------------------------------------------------------------------------------
# Samples drawn from a model, the inception path, errors


def test_samples_drawn_by_eval_fid_are_those_of_udiff_sample(runner, work, tmp_path):
    model = str(tmp_path / "m.safetensors")
    invoke(runner, ["train", os.path.join(RECIPES, "digits.toml"), "-o", model, "--set", "train.steps=3",
                    "--set", "train.batch_size=16", "--set", "net.channels=8", "--set", "net.num_blocks=1"])
    samples = str(tmp_path / "s.safetensors")
    invoke(runner, ["sample", model, "--seeds", "0-39", "--steps", "3", "-o", samples])
    ext = ["--ref", "digits", "--extractor", "classifier:" + work["clf"]]
    drawn = _eval(runner, model, "-n", "40", "--steps", "3", "--batch-size", "16", *ext)
    stored = _eval(runner, samples, *ext)
    assert drawn["samples_sha256"] == stored["samples_sha256"] and drawn["fid"] == stored["fid"]
    assert drawn["sampling"]["steps"] == 3 and drawn["sampling"]["n"] == 40 and drawn["fid"] > 0
    first = _eval(runner, samples, "-n", "10", *ext)
    assert first["n_samples"] == 10 and first["samples_sha256"] != stored["samples_sha256"]


def _random_inception(path):
    """An Inception-v3 state dict with random weights, written by torch.save (the user's .pth format)."""
    import unittest.mock

    import torch_fidelity.feature_extractor_inceptionv3 as inc

    with unittest.mock.patch.object(inc, "load_state_dict_from_url", lambda *a, **k: {}), \
            unittest.mock.patch.object(inc.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None):
        net = inc.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(net.state_dict(), path)


def test_inception_takes_grey_images_from_the_users_weights(runner, work, tmp_path):
    weights = str(tmp_path / fid.INCEPTION_FILE)
    _random_inception(weights)
    small = str(tmp_path / "four.safetensors")
    save_file({"images": work["images"]["base"][:4].contiguous()}, small)
    other = str(tmp_path / "four-more.safetensors")
    save_file({"images": work["images"]["shifted"][4:8].contiguous()}, other)
    r = _eval(runner, "tensors:" + small, "--ref", "tensors:" + other, "--weights", weights)
    assert np.isfinite(r["fid"]) and r["fid"] > 0 and r["feature_dim"] == 2048 and r["extractor"] == "inception"
    assert r["extractor_sha256"] == hashlib.sha256(open(weights, "rb").read()).hexdigest()
    assert "grey repeated to 3 channels" in r["handling"] and "299" in r["handling"]
    # weights of another network: one line
    wrong = str(tmp_path / "wrong.pth")
    torch.save({"conv.weight": torch.zeros(3, 3)}, wrong)
    _fails(runner, ["eval-fid", "tensors:" + small, "--ref", "tensors:" + other, "--weights", wrong],
           "do not fit", tmp_path)


def test_one_line_errors_and_nothing_written(runner, work, tmp_path, monkeypatch):
    base, small = "tensors:" + work["files"]["base"], "tensors:" + work["files"]["small"]
    clf = ["--extractor", "classifier:" + work["clf"]]
    save = ["--save-ref", str(tmp_path / "ref.safetensors")]
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    _fails(runner, ["eval-fid", base, "--ref", base, *save], fid.INCEPTION_FILE, tmp_path)
    _fails(runner, ["eval-fid", base, "--ref", base, "--weights", str(tmp_path / "nope.pth"), *save],
           fid.INCEPTION_FILE, tmp_path)
    _fails(runner, ["eval-fid", base, "--ref", small, "--extractor", "projection", *save],
           "compare images of one shape", tmp_path)
    _fails(runner, ["eval-fid", small, "--ref", small, *clf, *save], "was trained on images of shape", tmp_path)
    _fails(runner, ["eval-fid", base, "--ref", base, "--metrics", "fid,isc"], "unknown metric 'isc'", tmp_path)
    _fails(runner, ["eval-fid", base, "--ref", base, "--extractor", "vgg16"], "unknown extractor", tmp_path)
    _fails(runner, ["eval-fid", base, "--ref", base, "--steps", "3", *clf], "applies when SAMPLES is a model", tmp_path)
    _fails(runner, ["eval-fid", base, "-n", "601", "--ref", base, *clf], "only 600 images", tmp_path)
    _fails(runner, ["eval-fid", work["clf"], "--ref", base, *clf], "is a 'classifier' artifact", tmp_path)
    _fails(runner, ["eval-fid", base, "--ref", base, "--extractor", "projection:nan", *save], "not finite", tmp_path,
           code=1)


def test_as_a_real_process(work, tmp_path):
    env = dict(os.environ, TORCH_HOME=str(tmp_path))
    base = "tensors:" + work["files"]["base"]
    p = subprocess.run([PYTHON, "-m", "udiff", "eval-fid", base, "--ref", "digits", "-n", "100",
                        "--extractor", "classifier:" + work["clf"]], env=env, capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("udiff eval-fid: FID ") and p.stdout.count("\n") == 1  # result
    piped = artifacts.to_bytes({"images": work["images"]["base"][:50].contiguous()}, "samples")  # `-o -` of sample
    p = subprocess.run([PYTHON, "-m", "udiff", "eval-fid", "-", "--ref", "digits", "--json",
                        "--extractor", "classifier:" + work["clf"]], env=env, input=piped, capture_output=True)
    assert p.returncode == 0 and json.loads(p.stdout)["n_samples"] == 50
    bad = subprocess.run([PYTHON, "-m", "udiff", "eval-fid", base, "--ref", "digits"], env=env, capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and fid.INCEPTION_FILE in bad.stderr
