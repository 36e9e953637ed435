"""Several processes: `torchrun --nproc-per-node 2 -m udiff ...` with gloo on the CPU gives one process's
results (samples, likelihoods), writes one model, and resumes a stopped run at another process count."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from conftest import PYTHON, RECIPES, invoke
from udiff import artifacts
from udiff import distributed as D
from udiff.errors import UdiffError

# A tiny U-Net on the 8x8 digits: a few milliseconds a step
TINY = ["--set", "train.batch_size=16", "--set", "net.channels=8", "--set", "net.num_blocks=1",
        "--set", "train.warmup=2", "--set", "net.dropout=0.1"]


def _torchrun(args, **kw):
    """The udiff CLI under torchrun with two CPU processes (gloo), as a user starts it."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [PYTHON, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "udiff",
           *map(str, args)]
    return cmd, env


def _run2(args):
    cmd, env = _torchrun(args)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_items_split_in_whole_batches_in_order():
    for n, b, size in ((10, 3, 2), (10, 3, 5), (7, 100, 3), (0, 4, 2), (64, 8, 3)):
        got = [D.batches(n, b, D.World(r, size)) for r in range(size)]
        flat = [cut for part in got for cut in part]
        assert flat == [(s, min(n, s + b)) for s in range(0, n, b)]  # one process's batches, in rank order
        counts = [len(part) for part in got]
        assert max(counts) - min(counts) <= 1 and counts == sorted(counts, reverse=True)
    rows = [D.shard(10, D.World(r, 3)) for r in range(3)]
    assert [(s.start, s.stop) for s in rows] == [(0, 4), (4, 7), (7, 10)]


def test_bad_environment_and_single_process_commands(runner, monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(UdiffError, match="RANK=5, WORLD_SIZE=2"):
        D.world()
    monkeypatch.setenv("RANK", "0")
    r = invoke(runner, ["fit-basis", os.path.join(RECIPES, "digits.toml"), "-o", str(tmp_path / "b.safetensors")],
               ok=False)
    assert r.exit_code == 2 and "'udiff fit-basis' runs in one process; run it without torchrun" in r.stderr
    monkeypatch.setenv("RANK", "1")  # the other ranks stay silent: one line in all
    r = invoke(runner, ["fit-basis", os.path.join(RECIPES, "digits.toml"), "-o", str(tmp_path / "b.safetensors")],
               ok=False)
    assert r.exit_code == 2 and r.stderr == "" and os.listdir(tmp_path) == []


def test_train_stopped_at_a_checkpoint_resumes_at_any_process_count(runner, tmp_path):
    recipe = os.path.join(RECIPES, "digits.toml")
    model = tmp_path / "m.safetensors"
    ckpt = tmp_path / "m.ckpt.safetensors"
    # two processes, stopped once the first checkpoint is on disk
    cmd, env = _torchrun(["train", recipe, "-o", model, *TINY, "--set", "train.steps=5000",
                          "--set", "train.checkpoint_every=3"])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        running = proc.poll() is None
    finally:  # torchrun passes SIGTERM on to its workers (each in its own session) and waits for them
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert running and ckpt.exists(), "the two-process run ended before its first checkpoint"
    assert not model.exists()
    step = int(artifacts.load(str(ckpt), "checkpoint").meta["udiff.step"])
    assert step > 0 and step % 3 == 0
    # one process continues it ...
    one = json.loads(invoke(runner, ["train", recipe, "-o", model, *TINY, "--set", f"train.steps={step + 3}",
                                     "--set", "train.checkpoint_every=3", "--json"]).stdout)
    assert one["start_step"] == step and one["steps"] == step + 3 and one["world_size"] == 1
    # ... and two processes continue that: one model written, by one writer, with world_size 2
    before = set(os.listdir(tmp_path))
    p = _run2(["train", recipe, "-o", model, *TINY, "--set", f"train.steps={step + 6}",
               "--set", "train.checkpoint_every=3", "--json"])
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and lines[0]["start_step"] == step + 3 and lines[0]["world_size"] == 2
    assert set(os.listdir(tmp_path)) == before  # no stray temporary files, the same two outputs
    art = artifacts.load(str(model), "model")
    assert art.json("udiff.train")["world_size"] == 2 and art.json("udiff.train")["steps"] == step + 6
    assert all(torch.isfinite(v).all() for v in art.tensors.values() if v.is_floating_point())


def test_two_processes_train_the_same_model_as_one(runner, tmp_path, gauss_file):
    """Without dropout, the data, times and noise of every item are one process's, and so are the weights
    (up to the order of the sums in the gradient averaging)."""
    from conftest import write

    rec = write(tmp_path / "r.toml", f'[data]\nsource = "tensors:{gauss_file}"\nlimit = 512\n[schedule]\n'
                                     'kind = "vp-linear"\n[net]\nkind = "mlp"\nhidden = 32\ndepth = 2\ndropout = 0.0\n'
                                     '[train]\nsteps = 20\nbatch_size = 63\nlr = 3e-3\nwarmup = 5\nema = 0.9\n'
                                     'checkpoint_every = 0\n')
    one, two = str(tmp_path / "one.safetensors"), str(tmp_path / "two.safetensors")
    invoke(runner, ["train", rec, "-o", one])
    _run2(["train", rec, "-o", two])  # batch 63: shards of 32 and 31 rows
    a, b = artifacts.load(one, "model").tensors, artifacts.load(two, "model").tensors
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k


@pytest.fixture
def one_thread():
    """The ranks run with OMP_NUM_THREADS=1 (_torchrun); the one-process reference too, so that both sum their
    floats in the same order (another thread count rounds differently in the last bits)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_two_processes_sample_and_evaluate_as_one(runner, tmp_path, one_thread):
    recipe = os.path.join(RECIPES, "digits.toml")
    model = str(tmp_path / "m.safetensors")
    invoke(runner, ["train", recipe, "-o", model, *TINY, "--set", "train.steps=4", "--set", "train.checkpoint_every=0"])
    one, two = str(tmp_path / "one.safetensors"), str(tmp_path / "two.safetensors")
    common = ["--seeds", "3-9,20", "--steps", "4", "--sampler", "ddim", "--batch-size", "3"]
    invoke(runner, ["sample", model, *common, "-o", one])
    p = _run2(["sample", model, *common, "-o", two, "--json"])
    assert json.loads(p.stdout)["world_size"] == 2 and p.stdout.count("\n") == 1
    a, b = artifacts.load(one, "samples"), artifacts.load(two, "samples")
    assert torch.equal(a.tensors["images"], b.tensors["images"]) and torch.equal(a.tensors["seeds"], b.tensors["seeds"])
    assert b.json("udiff.samples")["world_size"] == 2
    # eval-nll: 2 batches over 2 ranks with adaptive repeats; every number as one process's
    args = ["eval-nll", model, "--data", "digits", "--limit", "12", "--batch-size", "6", "--json", "--max-repeats", "2"]
    ref = json.loads(invoke(runner, args).stdout)
    got = json.loads(_run2(args).stdout)
    assert got.pop("world_size") == 2 and ref.pop("world_size") == 1
    for k in ("seconds", "items_per_second"):
        got.pop(k), ref.pop(k)
    assert got == ref
    # eval-fid of the model's draws (3 batches) against the digits (2 batches of 1000): one process's numbers
    clf = str(tmp_path / "clf.safetensors")
    rec = os.path.join(tmp_path, "clf.toml")
    with open(rec, "w") as f:
        f.write('[data]\nsource = "digits"\n[net]\nkind = "classifier"\nchannels = 4\nfeatures = 8\n'
                '[train]\nsteps = 10\nbatch_size = 32\nwarmup = 2\n')
    invoke(runner, ["train", rec, "-o", clf])
    args = ["eval-fid", model, "-n", "40", "--steps", "3", "--batch-size", "16", "--ref", "digits",
            "--extractor", "classifier:" + clf, "--metrics", "fid,kid", "--json"]
    ref = json.loads(invoke(runner, args).stdout)
    got = json.loads(_run2(args).stdout)
    assert got.pop("world_size") == 2 and ref.pop("world_size") == 1
    for r in (ref, got):
        r.pop("seconds"), r["sampling"].pop("seconds")
    assert got == ref and ref["n_samples"] == 40 and ref["n_ref"] == 1797


def test_compress_refuses_several_processes(tmp_path):
    """compress codes on one bits-back stack, a sequential chain: under torchrun one line, exit 2, no file."""
    cmd, env = _torchrun(["compress", str(tmp_path / "m.safetensors"), "digits", "-o", str(tmp_path / "x.udz")])
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode != 0 and os.listdir(tmp_path) == []
    assert p.stderr.count("'udiff compress' runs in one process; run it without torchrun") == 1
