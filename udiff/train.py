"""The training loop: AdamW with warm-up, gradient clipping, EMA, bf16 autocast on CUDA, checkpoints, resume.

Determinism: every random number of step s (data order, times, noise, dropout, flips) comes from torch
generators seeded with rng.step_seed(seed, s), so a run resumed from a checkpoint at step s continues
exactly as the uninterrupted run would; the checkpoint holds weights, EMA, optimizer state and step.
The data set lives on the device as uint8 and is converted per batch.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass

import torch

from . import artifacts
from .data import Dataset, to_unit
from .distributed import World, all_sum, average_gradients, shard
from .errors import ArtifactError, UdiffError
from .guidance import Labelled
from .likelihood import vlb_loss
from .losses import diffusion_loss
from .registry import TIMES
from .rng import step_seed


WARM_STEPS = 10


class TrainingDiverged(UdiffError):
    exit_code = 1


@dataclass
class TrainResult:
    steps: int
    start_step: int
    seconds: float
    images_per_second: float
    loss: float
    device: str
    checkpoint: str | None
    ema_state: dict | None = None  # parameter name → EMA tensor (not part of the printed summary)
    history: list | None = None  # the rows of LossLog, from step 0 across resumes (not printed either)
    world_size: int = 1               # processes that trained (torchrun); images_per_second is all of theirs
    warmup_seconds: float | None = None  # the first WARM_STEPS steps (compilation, autotuning), not in the rate

    def as_dict(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("ema_state", "history")}


class BatchOrder:
    """Batch b of a run holds data positions b·B ... b·B + B - 1 of a stream of epoch permutations.

    Each epoch's permutation is drawn on the CPU (the same numbers on every device) and moved to `device`
    once, so a step's indices are slices of device tensors: no host-to-device copy in the step."""

    def __init__(self, n: int, batch: int, seed: int, device="cpu"):
        self.n, self.batch, self.seed, self.device = n, batch, seed, torch.device(device)
        self._cache: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            g = torch.Generator().manual_seed(step_seed(self.seed, epoch, salt=1))
            self._cache = {epoch: torch.randperm(self.n, generator=g).to(self.device), **{
                e: p for e, p in self._cache.items() if e >= epoch - 1}}
        return self._cache[epoch]

    def indices(self, step: int) -> torch.Tensor:
        first, end = step * self.batch, (step + 1) * self.batch
        parts = []
        for e in range(first // self.n, (end - 1) // self.n + 1):
            lo, hi = max(first, e * self.n) - e * self.n, min(end, (e + 1) * self.n) - e * self.n
            parts.append(self._perm(e)[lo:hi])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class LossLog:
    """The mean loss over every `every` steps (`last`; over all ranks under torchrun), a stop when it is not
    finite, a progress bar, and the training history: one row per `every` steps (step, mean loss, learning rate,
    mean gradient norm before clipping, img/s of the global batch and seconds over the window), continued from
    `history` (a resumed run's rows up to its step)."""

    def __init__(self, steps: int, start: int = 0, *, device="cpu", progress: bool = False, what: str = "training",
                 every: int = 50, history=None, batch_size: int = 0, report=None, report_every: float = 30.0,
                 world: World | None = None, bits_per_dim: bool = False):
        self.steps, self.every, self.what, self.world = steps, every, what, world or World()
        self.bits_per_dim = bits_per_dim  # the loss is the whole bound in nats/dim of 8-bit data: log it in bits too
        self.acc, self.n, self.last = torch.zeros((), device=device), 0, float("nan")
        self.grad = torch.zeros((), device=device)
        self.history = [r for r in (history or []) if r["step"] <= start]
        self.batch_size, self.t_window = batch_size, time.perf_counter()
        self.report, self.report_every, self.t_report = report, report_every, time.perf_counter()  # a line to a log
        self.bar = None
        if progress:
            from tqdm import tqdm
            self.bar = tqdm(total=steps, initial=start, file=sys.stderr, unit="step", dynamic_ncols=True)

    def add(self, loss: torch.Tensor, done: int, grad_norm=None, lr: float | None = None):
        """The loss of step `done` (1-based), and its gradient norm and learning rate for the history."""
        self.acc += loss.detach()
        if grad_norm is not None:
            self.grad += grad_norm.detach()
        self.n += 1
        if self.n == self.every or done == self.steps:
            # the only host sync of a training step, every `every` steps (the mean over all ranks' losses)
            self.last = float(all_sum(self.acc)) / (self.n * self.world.size)
            now = time.perf_counter()
            row = {"step": done, "loss": self.last, "lr": lr, "seconds": round(now - self.t_window, 4),
                   "images_per_second": round(self.n * self.batch_size / max(now - self.t_window, 1e-9), 2)}
            if grad_norm is not None:
                row["grad_norm"] = float(self.grad) / self.n
            if self.bits_per_dim:
                row["bits_per_dim"] = self.last / math.log(2.0)
            self.history.append(row)
            if self.report and now - self.t_report >= self.report_every and done < self.steps:
                self.t_report = now
                self.report(f"{self.what}: step {done}/{self.steps}, loss {self.last:.4g}, "
                            f"{row['images_per_second']:.0f} img/s")
            self.acc.zero_()
            self.grad.zero_()
            self.n, self.t_window = 0, now
            if not math.isfinite(self.last):
                raise TrainingDiverged(f"{self.what} diverged at step {done} (loss {self.last}); lower [train] lr "
                                       "or raise [train] warmup")
            if self.bar:
                self.bar.set_postfix(loss=f"{self.last:.4g}", refresh=False)
        if self.bar:
            self.bar.update(1)

    def close(self):
        if self.bar:
            self.bar.close()


def checkpoint_path(out_path: str) -> str:
    base = out_path[:-len(".safetensors")] if out_path.endswith(".safetensors") else out_path
    return base + ".ckpt.safetensors"


def _optimizer_tensors(opt: torch.optim.Optimizer):
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"opt.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict):
    state: dict[int, dict] = {}
    for name, v in tensors.items():
        if name.startswith("opt."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = v
    for name, v in meta.get("scalars", {}).items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = v
    current = opt.state_dict()["param_groups"]
    groups = []
    for cur, saved in zip(current, meta["param_groups"]):
        g = dict(cur)
        for k, v in saved.items():
            if k not in ("params", "fused", "foreach", "capturable", "differentiable"):
                g[k] = tuple(v) if isinstance(v, list) else v
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


def fit_gaussian(model, data: Dataset, device) -> TrainResult:
    """The `gaussian` net: mean and covariance of the data, no gradient steps."""
    t0 = time.perf_counter()
    model.prepare(device)
    model.fit(data.unit().to(device), None if data.labels is None else data.labels.to(device))
    return TrainResult(0, 0, time.perf_counter() - t0, 0.0, float("nan"), str(device), None)


def train(model, data: Dataset, rec, *, device, out_path: str, data_info: dict, fresh: bool = False,
          progress: bool = False, report=None, world: World | None = None) -> TrainResult:
    """Optimise `model` on `data` per rec.train; writes checkpoints beside out_path and returns a summary.
    `progress`: a tqdm bar on stderr; `report`: else a function given a progress line at most every 30 s.

    Under torchrun (`world` of several ranks, process group started) every rank draws the random numbers of
    the whole batch of each step from the step's seed, as one process does, and keeps its shard of the batch
    (distributed.shard); the network's gradients are averaged over the ranks by DDP, so the step is one
    process's step on the global batch (dropout masks excepted: each rank draws its own). Rank 0 alone
    writes checkpoints; every rank resumes from the same checkpoint, whatever the number of ranks that wrote it.
    The caller writes the final model artifact (see `export_state`).
    """
    spec = rec.train
    world = world or World()
    dev = torch.device(device)
    wrap = _ddp(dev) if world.size > 1 else None
    model.prepare(dev, compile_net=dev.type == "cuda" if spec.compile is None else spec.compile, wrap=wrap)
    params = [p for p in model.parameters() if p.requires_grad]
    fused = dev.type == "cuda"
    learned = {id(p) for p in model.schedule.parameters()}  # a learned schedule: no weight decay
    groups = [{"params": [p for p in params if id(p) not in learned]}]
    if learned:
        groups.append({"params": [p for p in params if id(p) in learned], "weight_decay": 0.0})
    outside = _outside_net(model, params)  # trainable parameters DDP does not see (a learned schedule)
    opt = torch.optim.AdamW(groups, lr=spec.lr, betas=tuple(spec.betas), eps=spec.adam_eps,
                            weight_decay=spec.weight_decay, **({"fused": True} if fused else {"foreach": True}))
    ema = [p.detach().clone() for p in params]
    ckpt = checkpoint_path(out_path) if out_path != "-" else None
    start, elapsed, history = 0, 0.0, []
    if spec.steps == 0:
        from .errors import RecipeError

        raise RecipeError("[train] steps: 0 trains nothing (only [net] kind = \"gaussian\" needs no steps); give "
                          "steps >= 1")

    if ckpt and os.path.exists(ckpt) and not fresh:
        start, elapsed, history = _resume(ckpt, model, opt, ema, params, rec, data_info, spec.steps)

    use_bf16 = spec.precision == "bf16" or (spec.precision == "auto" and dev.type == "cuda")
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=use_bf16)

    images = data.tensor.to(dev)
    labels = data.labels.to(dev) if model.classes else None  # class-conditional: checked by guidance.check_labels
    batch = spec.batch_size
    order = BatchOrder(len(data), batch, spec.seed, dev)
    part = shard(batch, world)
    scale = world.size / batch  # the per-item losses of a shard, summed, as their share of the global mean
    vlb_noise = spec.weighting == "vlb" and data.is_image8
    shape = (model.process.k,) + model.event_shape
    model.train()
    log = LossLog(spec.steps, start, device=dev, progress=progress and world.main, every=spec.log_every,
                  history=history, batch_size=batch, report=report if world.main else None, world=world,
                  bits_per_dim=spec.weighting == "vlb" and data.is_image8)

    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # Throughput is measured in steady state: the first WARM steps (cuDNN autotuning, compilation) are
    # excluded when the run is long enough to afford it, and their time is reported apart.
    warm = WARM_STEPS if spec.steps - start >= 2 * WARM_STEPS else 0
    t_run = time.perf_counter()
    t_ckpt, warm_seconds = 0.0, None
    for step in range(start, spec.steps):
        if step == start + warm and warm:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t_steady, t_ckpt_steady = time.perf_counter(), t_ckpt
            warm_seconds = t_steady - t_run - t_ckpt
        torch.manual_seed(step_seed(spec.seed, step))
        # the whole batch's random numbers, in one process's order; this rank keeps rows `part`
        idx = order.indices(step)[part]
        x = images[idx]
        x = to_unit(x) if data.is_image8 else x.float()
        if rec.data.hflip and x.ndim == 4:
            flip = torch.rand(batch, device=dev)[part] < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        x0 = model.encode(x)
        t = TIMES.get(spec.times)(model, batch, dev, spec)[part]
        eps = torch.randn((batch,) + shape, device=dev)[part]
        for g in opt.param_groups:
            g["lr"] = spec.lr * min(1.0, (step + 1) / spec.warmup) if spec.warmup else spec.lr
        sched = {k: v[part] for k, v in model.schedule.draw_params(batch, dev).items()}
        eps0 = torch.randn((batch,) + shape, device=dev)[part] if vlb_noise else None
        run = model
        if labels is not None:  # the batch's labels, some dropped to the null class ([train] label_dropout)
            keep = torch.rand(batch, device=dev)[part] >= spec.label_dropout
            run = Labelled(model, torch.where(keep, labels[idx], model.classes))
        if world.size > 1:  # dropout: each rank's own masks
            torch.manual_seed(step_seed(spec.seed, step, salt=DROPOUT_SALT + world.rank))
        with autocast:
            if spec.weighting == "vlb":  # the whole bound (prior + reconstruction + diffusion), per dim
                per_item = vlb_loss(run, x, x0, t, eps, data.is_image8, sched, eps0=eps0)
            else:
                per_item = diffusion_loss(run, x0, t, eps, spec.weighting, sched)
            loss = per_item.sum() * scale
        loss.backward()
        average_gradients(outside)
        # the norm before clipping (of the averaged gradients), for the history (an infinite bound only measures it)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, spec.grad_clip if spec.grad_clip > 0 else math.inf,
                                                   foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
        decay = min(spec.ema, (1 + step) / (10 + step)) if spec.ema_warmup else spec.ema
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - decay)
        done = step + 1
        log.add(loss, done, grad_norm, opt.param_groups[0]["lr"])
        at_checkpoint = done == spec.steps or (spec.checkpoint_every and done % spec.checkpoint_every == 0)
        if ckpt and world.main and at_checkpoint:
            t0 = time.perf_counter()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            run_seconds = time.perf_counter() - t_run - t_ckpt
            _save_checkpoint(ckpt, model, opt, ema, params, rec, data_info, done, elapsed + run_seconds, log.history)
            t_ckpt += time.perf_counter() - t0
    if dev.type == "cuda":
        torch.cuda.synchronize()
    log.close()
    now = time.perf_counter()
    seconds = now - t_run - t_ckpt
    steps_run = spec.steps - start
    if warm:
        steady = now - t_steady - (t_ckpt - t_ckpt_steady)
        rate = (steps_run - warm) * batch / steady
    else:
        rate = steps_run * batch / seconds if steps_run and seconds > 0 else 0.0
    model.prepare(dev, compile_net=False)  # the plain network again (no DDP wrapper, no compiled graph)
    model.eval()
    names = {id(p): n for n, p in model.named_parameters()}
    ema_state = {names[id(p)]: e for p, e in zip(params, ema)}
    loss = log.last if steps_run else (log.history[-1]["loss"] if log.history else float("nan"))
    return TrainResult(spec.steps, start, seconds, rate, loss, str(dev), ckpt, ema_state, log.history,
                       world_size=world.size, warmup_seconds=warm_seconds)


DROPOUT_SALT = 0x5EED  # step_seed salt of rank r's dropout stream under torchrun: DROPOUT_SALT + r


def _ddp(dev):
    """The wrapper that puts a network under DDP: gradients averaged over the ranks during the backward pass."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # buffers are the same on every rank (built from the same recipe and seed): no broadcast before each forward
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}

    def wrap(net):
        ids = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else None
        return DistributedDataParallel(net, device_ids=ids, **no_sync)

    return wrap


def _outside_net(model, params):
    net = getattr(model, "net", None)
    inside = {id(p) for p in net.parameters()} if net is not None else set()
    return [p for p in params if id(p) not in inside]


def export_state(model, ema_state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a model artifact: weights.* (raw) and ema.* (EMA parameters; buffers and fitted models
    have no EMA, so their ema.* equal weights.*)."""
    state = model.state_dict()
    out = {f"weights.{k}": v for k, v in state.items()}
    out.update({f"ema.{k}": (ema_state or {}).get(k, v) for k, v in state.items()})
    return out


def history_lines(rows) -> str:
    """The training history as JSON lines (one row per line), as stored in `udiff.history`."""
    import json

    return "\n".join(json.dumps(r, sort_keys=True) for r in rows)


def read_history(text: str | None) -> list[dict]:
    import json

    return [json.loads(line) for line in (text or "").splitlines() if line.strip()]


def _save_checkpoint(path, model, opt, ema, params, rec, data_info, step, seconds, history=()):
    tensors = {f"weights.{k}": v for k, v in model.state_dict().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    tensors.update({f"ema.{names[id(p)]}": e for p, e in zip(params, ema)})
    opt_t, opt_meta = _optimizer_tensors(opt)
    tensors.update(opt_t)
    artifacts.save(path, tensors, "checkpoint", rec.to_json(), meta={
        "udiff.step": str(step), "udiff.data": data_info, "udiff.optimizer": opt_meta,
        "udiff.seconds": f"{seconds:.3f}", "udiff.history": history_lines(history)})


def _resume(path, model, opt, ema, params, rec, data_info, steps):
    from .build import recipe_of, section_changes

    art = artifacts.load(path, "checkpoint")
    stored = recipe_of(art)
    diffs = section_changes(stored, rec, {"train": ("steps", "checkpoint_every", "compile", "log_every"),
                                          "sample": ("*",)})
    if diffs:
        raise ArtifactError(f"{path}: checkpoint of a different recipe ({diffs[0]}); pass --fresh to start "
                            "over, or write to another -o")
    stored_data = art.json("udiff.data", {})
    if stored_data.get("sha256") != data_info.get("sha256"):
        raise ArtifactError(f"{path}: checkpoint was trained on other data ({stored_data.get('source')}); "
                            "pass --fresh to start over")
    step = int(art.meta.get("udiff.step", "0"))
    if step > steps:
        raise ArtifactError(f"{path}: checkpoint is at step {step}, beyond [train] steps = {steps}; raise "
                            "steps or pass --fresh")
    weights = {k[len("weights."):]: v for k, v in art.tensors.items() if k.startswith("weights.")}
    model.load_state_dict(weights)
    names = {id(p): n for n, p in model.named_parameters()}
    with torch.no_grad():
        for p, e in zip(params, ema):
            e.copy_(art.tensors[f"ema.{names[id(p)]}"])
    _load_optimizer(opt, art.tensors, art.json("udiff.optimizer"))
    return step, float(art.meta.get("udiff.seconds", "0")), read_history(art.meta.get("udiff.history"))

