"""Bad inputs across every subcommand: each gives ONE line on stderr naming the problem (and the fix), the right
exit status (2 for the user's input, 1 for a failure of the work), no traceback, and leaves no file behind
(temporary files included). The table is the contract; a few cases also run as real processes."""

import builtins
import errno
import json
import os
import shutil
import struct
import subprocess

import pytest
from safetensors.torch import save_file

from conftest import PYTHON, gaussian_data, invoke, vector_recipe, write

IMG = """
[data]
source = "digits"
[net]
kind = "gaussian"
[sample]
sampler = "ddim"
steps = 4
"""

PYMOD = """
import torch
def raises(x):
    raise ValueError("boom")
def nan_far_out(x):
    return -0.5 * (x ** 2).sum(1) + torch.where(x[:, 0].abs() > 1.0, float("nan"), 0.0)
"""

TARGET = """
[target]
kind = "python"
function = "badmod:{fn}"
dim = 2
[sample]
steps = 40
levels = 8
"""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Every input a case needs, made once: models, artifacts, recipes, broken files."""
    from click.testing import CliRunner

    d = tmp_path_factory.mktemp("inputs")
    runner = CliRunner()
    data = str(d / "gauss.safetensors")
    save_file({"x": gaussian_data(512, d=4)}, data)
    p = {"dir": str(d), "data": data, "subdir": str(d / "a-folder"), "file": write(d / "plain.txt", "text\n")}
    os.mkdir(p["subdir"])
    p["vec"] = write(d / "vec.toml", vector_recipe(data, "mlp", "ddim", "steps = 4\n"))
    p["img"] = write(d / "img.toml", IMG)
    p["vec_model"], p["img_model"] = str(d / "vec.safetensors"), str(d / "img.safetensors")
    gauss = write(d / "vg.toml", vector_recipe(data, "gaussian", "ddim", "steps = 4\n"))
    invoke(runner, ["train", gauss, "-o", p["vec_model"]])
    invoke(runner, ["train", p["img"], "-o", p["img_model"]])
    p["samples"] = str(d / "samples.safetensors")
    invoke(runner, ["sample", p["img_model"], "-n", "4", "-o", p["samples"]])
    raw = open(p["img_model"], "rb").read()
    p["truncated"] = str(d / "truncated.safetensors")
    open(p["truncated"], "wb").write(raw[: len(raw) // 2])
    tampered = bytearray(raw)
    tampered[-3] ^= 0xFF
    p["tampered"] = str(d / "tampered.safetensors")
    open(p["tampered"], "wb").write(bytes(tampered))
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header["__metadata__"]["udiff.recipe"] = header["__metadata__"]["udiff.recipe"].replace('"ddim"', '"heun"')
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    p["edited"] = str(d / "edited.safetensors")
    open(p["edited"], "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    p["oversized"] = str(d / "oversized.safetensors")
    open(p["oversized"], "wb").write(struct.pack("<Q", 1 << 40) + b"{}")
    p["badtoml"] = write(d / "badtoml.toml", "[train\nsteps = 3\n")
    p["section"] = write(d / "section.toml", IMG + "[trian]\nsteps = 3\n")
    p["psd"] = write(d / "psd.toml", IMG + '[process]\nkind = "recipe"\nD = [[-1.0]]\nQ = [[0.0]]\n')
    write(d / "badmod.py", PYMOD)
    p["t_raises"] = write(d / "t-raises.toml", TARGET.format(fn="raises"))
    p["t_nan"] = write(d / "t-nan.toml", TARGET.format(fn="nan_far_out"))
    p["t_disguised"] = write(d / "t-disguised.safetensors", TARGET.format(fn="raises"))
    p["t_txt"] = write(d / "t-target.txt", TARGET.format(fn="raises"))
    p["png_bad"] = write(d / "not-an-image.png", "hello\n")
    from PIL import Image

    p["mask_small"] = str(d / "mask-small.png")
    Image.new("L", (5, 5), 255).save(p["mask_small"])
    p["png_ok"] = str(d / "digit.png")
    Image.new("L", (8, 8), 100).save(p["png_ok"])
    return p


# (id, arguments with {placeholders} (inputs) and {out} (the case's own output folder), exit status, text the
# one line must contain, and a special condition: "unreadable:KEY" makes that input unreadable, "full" fills the
# output file system)
CASES = [
    ("train-toml-syntax", "train {badtoml} -o {out}/m.safetensors", 2, "not valid TOML", None),
    ("train-unknown-section", "train {section} -o {out}/m.safetensors", 2, "[trian]: unknown section", None),
    ("train-unknown-key", "train {vec} -o {out}/m.safetensors --set train.stepz=3", 2, "did you mean 'steps'", None),
    ("train-wrong-type", "train {vec} -o {out}/m.safetensors --set train.steps=\"many\"", 2, "expected an integer",
     None),
    ("train-out-of-range", "train {vec} -o {out}/m.safetensors --set train.lr=-1", 2, "lr: must be > 0", None),
    ("train-huge-steps", "train {vec} -o {out}/m.safetensors --set train.steps=99999999999999999999", 2,
     "out of range", None),
    ("train-too-many-steps", "train {vec} -o {out}/m.safetensors --set train.steps=10000000000", 2,
     "must be <= 1000000000", None),
    ("train-zero-steps", "train {vec} -o {out}/m.safetensors --set train.steps=0", 2, "0 trains nothing", None),
    ("train-missing-recipe", "train {dir}/none.toml -o {out}/m.safetensors", 2, "no such recipe file", None),
    ("train-unreadable-recipe", "train {vec} -o {out}/m.safetensors", 2, "permission denied", "unreadable:vec"),
    ("train-recipe-is-a-directory", "train {subdir} -o {out}/m.safetensors", 2, "is a directory", None),
    ("train-unknown-shipped", "train @nope -o {out}/m.safetensors", 2, "no shipped recipe", None),
    ("train-out-is-a-directory", "train {vec} -o {out}", 2, "is a directory; give a file name", None),
    ("train-out-under-a-file", "train {vec} -o {file}/m.safetensors", 2, "is a file, not a directory", None),
    ("train-full-disk", "train {vec} -o {out}/m.safetensors", 2, "No space left", "full"),
    ("train-haar-size", "train {img} -o {out}/m.safetensors --set basis.kind=\"haar\" --set basis.levels=4", 2,
     "levels", None),
    ("train-non-psd-D", "train {psd} -o {out}/m.safetensors", 2, "positive semi-definite", None),
    ("train-basis-wrong-kind", "train {img} -o {out}/m.safetensors --basis {samples}", 2,
     "is a 'samples' artifact; expected a 'basis'", None),
    ("train-label-dropout-unconditional", "train {img} -o {out}/m.safetensors --set train.label_dropout=0.1", 2,
     "the network is unconditional", None),
    ("train-classes-without-labels", "train {vec} -o {out}/m.safetensors --set net.classes=3", 2, "has no labels",
     None),
    ("train-classes-too-few", "train {img} -o {out}/m.safetensors --set net.classes=3", 2, "beyond [net] classes = 3",
     None),
    ("train-noisy-classifier-of-vectors", "train {vec} -o {out}/m.safetensors --set net.kind=\"noisy-classifier\"",
     2, "8-bit images", None),
    ("train-missing-data", "train {vec} -o {out}/m.safetensors --data tensors:{dir}/none.safetensors", 2,
     "not found", None),
    ("fit-basis-out-is-a-directory", "fit-basis {img} -o {out}", 2, "is a directory", None),
    ("fit-basis-haar-size", "fit-basis {img} -o {out}/b.safetensors --set basis.kind=\"haar\" --set basis.levels=4",
     2, "levels", None),
    ("sample-n-0", "sample {img_model} -n 0 -o {out}/s.safetensors", 2, "-n", None),
    ("sample-unknown-sampler", "sample {img_model} -n 2 -o {out}/s.safetensors --sampler magic", 2,
     "'magic' is not one of", None),
    ("sample-seeds-syntax", "sample {img_model} --seeds a-b -o {out}/s.safetensors", 2, "expected comma-separated",
     None),
    ("sample-seeds-backwards", "sample {img_model} --seeds 9-3 -o {out}/s.safetensors", 2, "runs backwards", None),
    ("sample-seeds-beyond-32-bit", "sample {img_model} --seeds 0-99999999999 -o {out}/s.safetensors", 2,
     "seeds must lie in", None),
    ("sample-seeds-too-many", "sample {img_model} --seeds 0-20000000 -o {out}/s.safetensors", 2,
     "more than 10,000,000 seeds", None),
    ("sample-missing-model", "sample {dir}/none.safetensors -n 2 -o {out}/s.safetensors", 2, "no such file", None),
    ("sample-unreadable-model", "sample {img_model} -n 2 -o {out}/s.safetensors", 2, "permission denied",
     "unreadable:img_model"),
    ("sample-model-is-a-directory", "sample {subdir} -n 2 -o {out}/s.safetensors", 2, "is a directory", None),
    ("sample-wrong-kind", "sample {samples} -n 2 -o {out}/s.safetensors", 2, "is a 'samples' artifact", None),
    ("sample-truncated", "sample {truncated} -n 2 -o {out}/s.safetensors", 2, "truncated", None),
    ("sample-tampered-tensors", "sample {tampered} -n 2 -o {out}/s.safetensors", 2, "corrupted artifact", None),
    ("sample-edited-metadata", "sample {edited} -n 2 -o {out}/s.safetensors", 2, "metadata do not match", None),
    ("sample-oversized-header", "sample {oversized} -n 2 -o {out}/s.safetensors", 2, "bad header length", None),
    ("sample-out-is-a-directory", "sample {img_model} -n 2 -o {out}", 2, "is a directory", None),
    ("sample-grid-is-a-directory", "sample {img_model} -n 2 -o {out}/s.safetensors --grid {out}", 2,
     "is a directory", None),
    ("sample-full-disk", "sample {img_model} -n 2 -o {out}/s.safetensors --grid {out}/s.png", 2, "No space left",
     "full"),
    ("sample-grid-of-vectors", "sample {vec_model} -n 2 --grid {out}/g.png", 2, "--grid needs image samples", None),
    ("sample-python-target-raises", "sample {t_raises} -n 8 -o {out}/s.safetensors", 2, "ValueError: boom", None),
    ("sample-python-target-nan", "sample {t_nan} -n 64 -o {out}/s.safetensors", 1, "returned NaN", None),
    ("sample-target-named-like-an-artifact", "sample {t_disguised} -n 8 -o {out}/s.safetensors", 2,
     "not a safetensors artifact", None),
    ("sample-target-not-named-toml", "sample {t_txt} -n 8 -o {out}/s.safetensors", 2, "must be named *.toml", None),
    ("sample-class-of-unconditional", "sample {img_model} -n 2 --class 1 -o {out}/s.safetensors", 2,
     "this model is unconditional", None),
    ("sample-labels-count", "sample {img_model} -n 2 --labels 0,1,2 -o {out}/s.safetensors", 2,
     "3 labels for 2 items", None),
    ("sample-labels-syntax", "sample {img_model} -n 2 --labels 0,x -o {out}/s.safetensors", 2, "'x' is not a label",
     None),
    ("sample-class-and-labels", "sample {img_model} -n 2 --class 0 --labels 0,1 -o {out}/s.safetensors", 2,
     "give one", None),
    ("sample-guidance-without-class", "sample {img_model} -n 2 --guidance 2 -o {out}/s.safetensors", 2,
     "say which with --class", None),
    ("sample-classifier-wrong-kind", "sample {img_model} -n 2 --class 0 --classifier {samples} -o {out}/s.safetensors",
     2, "expected a 'noisy-classifier'", None),
    ("sample-class-of-target", "sample {t_raises} -n 2 --class 0 -o {out}/s.safetensors", 2, "has no classes", None),
    ("inpaint-class-of-unconditional", "inpaint {img_model} digits -n 2 --mask lower-half --class 1 -o {out}/f.png",
     2, "this model is unconditional", None),
    ("inpaint-mask-wrong-size", "inpaint {img_model} digits -n 2 --mask {mask_small} -o {out}/f.png", 2,
     "does not match", None),
    ("inpaint-not-an-image", "inpaint {img_model} {png_bad} --mask lower-half -o {out}/f.png", 2,
     "not an image PIL can read", None),
    ("inpaint-unreadable-mask", "inpaint {img_model} {png_ok} --mask {mask_small} -o {out}/f.png", 2,
     "permission denied", "unreadable:mask_small"),
    ("inpaint-grid-is-a-directory", "inpaint {img_model} digits -n 2 --mask lower-half -o {out}/ok.png --grid {out}",
     2, "is a directory", None),
    ("inpaint-unknown-mask", "inpaint {img_model} digits -n 2 --mask {dir}/none.png -o {out}/f.png", 2,
     "no such file and not a named mask", None),
    ("eval-nll-recipe-for-model", "eval-nll {img} --data digits", 2, "is a recipe", None),
    ("eval-nll-wrong-data-shape", "eval-nll {vec_model} --data digits", 2, "was trained on", None),
    ("eval-nll-unknown-method", "eval-nll {img_model} --data digits --method magic", 2, "'magic' is not one of",
     None),
    ("show-missing", "show {dir}/none.safetensors", 2, "no such file", None),
    ("show-not-an-artifact", "show {file}", 2, "not a safetensors artifact", None),
    ("compress-vectors", "compress {vec_model} digits -o {out}/c.udz", 2, "codes 8-bit images", None),
    ("compress-out-is-a-directory", "compress {img_model} digits -o {out}", 2, "is a directory", None),
    ("recipes-unknown", "recipes nope", 2, "no shipped recipe", None),
    ("eval-fid-unknown-metric", "eval-fid {samples} --ref digits --metrics magic", 2, "magic", None),
    ("check-too-many-dims", "check {img} --max-dims 16", 2, "more than --max-dims 16", None),
    ("check-unknown-key", "check {img} --set sample.stepz=3", 2, "did you mean 'steps'", None),
    ("plot-unknown-picture-type", "plot schedule {img} -o {out}/s.gif", 2, "end the name with .png", None),
    ("plot-history-of-samples", "plot history {samples} -o {out}/h.png", 2, "is a 'samples' artifact", None),
    ("plot-samples-of-a-model", "plot samples {img_model} -o {out}/s.png", 2, "is a 'model' artifact", None),
]


def _listing(*dirs):
    return {d: sorted(os.listdir(d)) for d in dirs}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, inputs, runner, tmp_path, monkeypatch, one_thread):
    name, args, status, needle, special = case
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(out=out, **inputs) for a in args.split()]
    argv = [a.strip('"') if a.count('"') == 2 and a.startswith('"') else a for a in argv]
    monkeypatch.chdir(inputs["dir"])  # the python target's module is imported from the current directory
    real_open = builtins.open
    if special and special.startswith("unreadable:"):
        locked = os.path.abspath(inputs[special.split(":")[1]])

        def guarded(file, *a, **k):  # chmod 000 does not stop root, so refuse the read as the kernel would
            if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) == locked:
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, *a, **k)

        monkeypatch.setattr(builtins, "open", guarded)
    elif special == "full":
        class Full:
            def __init__(self, fh):
                self.fh = fh

            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

            def __getattr__(self, attr):
                return getattr(self.fh, attr)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.fh.close()

        def full(file, mode="r", *a, **k):
            fh = real_open(file, mode, *a, **k)
            inside = isinstance(file, (str, os.PathLike)) and str(os.path.abspath(file)).startswith(str(out))
            return Full(fh) if inside and ("w" in mode or "a" in mode) else fh

        monkeypatch.setattr(builtins, "open", full)
    before = _listing(out, inputs["dir"])
    r = invoke(runner, argv, ok=False)
    monkeypatch.setattr(builtins, "open", real_open)
    err = r.stderr
    assert r.exit_code == status, (r.exit_code, err, r.stdout)
    assert err.count("\n") == 1 and err.startswith("udiff"), err  # exactly one line, from udiff
    assert needle in err, err
    assert "Traceback" not in r.output + err
    assert r.stdout == "", r.stdout  # stdout holds results only
    assert _listing(out, inputs["dir"]) == before  # nothing written, no temporary file left


def test_table_covers_every_subcommand_and_enough_cases():
    from udiff.cli import COMMANDS

    used = {c[1].split()[0] for c in CASES}
    assert used >= set(COMMANDS) and len(CASES) >= 40


@pytest.mark.parametrize("key,args,status", [
    ("badtoml", "train {badtoml} -o {out}/m.safetensors", 2),
    ("t_nan", "sample {t_nan} -n 64 -o {out}/s.safetensors", 1),
    ("tampered", "sample {tampered} -n 2 -o {out}/s.safetensors", 2),
])
def test_bad_input_as_a_real_process(key, args, status, inputs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(out=out, **inputs) for a in args.split()]
    p = subprocess.run([PYTHON, "-m", "udiff"] + argv, capture_output=True, text=True, cwd=inputs["dir"],
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == status and p.stdout == "" and p.stderr.count("\n") == 1, p.stderr
    assert os.listdir(out) == []


def test_a_real_full_file_system(inputs, tmp_path):
    """ENOSPC from the kernel: a 64 KiB tmpfs (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        p = subprocess.run([PYTHON, "-m", "udiff", "sample", inputs["img_model"], "-n", "2000",
                            "-o", str(mnt / "s.safetensors")], capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert p.returncode == 2 and "No space left on device" in p.stderr and p.stderr.count("\n") == 1, p.stderr
        assert os.listdir(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_stdout_to_a_terminal_is_refused(inputs, tmp_path, monkeypatch):
    """`-o -` on a terminal would print binary; it is refused before any work."""
    import sys

    from udiff import artifacts
    from udiff.errors import ArtifactError

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    with pytest.raises(ArtifactError, match="stdout is a terminal"):
        artifacts.check_output("-")
