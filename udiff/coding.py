"""Lossless compression of 8-bit images: bits-back ANS coding with a model's discrete-time chain.

docs/compression.md derives what follows and reports the measurements behind the defaults.

The discrete-time model with T steps is a chain of latents z_0..z_T at the times t_i = t_min + (1 - t_min) i/T
(the grid of the discrete bound in likelihood.vlb_terms):

    model     p(z_T) prod_i p(z_{i-1} | z_i) p(x | z_0)    prior, the reverse Gaussian, VDM's 256-way decoder
    encoder   q(z_0 | x) prod_i q(z_i | z_{i-1})          the forward process, which is Markov

Items are coded on one ANS stack (constriction's AnsCoder) in Bit-Swap order, a batch of items per call of
the coder, each latent popped with q and then the latent below it pushed with p:

    pop z_0 ~ q(z_0 | x);  push x with p(x | z_0)
    for i = 1..T:  pop z_i ~ q(z_i | z_{i-1});  push z_{i-1} with p(z_{i-1} | z_i)
    push z_T with p(z_T)

The decoder runs the same steps backwards (it pops what was pushed and pushes back what was popped, which
returns the borrowed bits). The stack grows by -log p(x, z) + log q(z | x) per item, the discrete-T bound
in expectation, provided the popped latents are draws from q: the bits on top of the stack are XORed with
a keystream before every pop (`Stack.scramble`), because what a pop reads was mostly just pushed with p
and would otherwise hand back p's errors as q's noise.

Latent i lives on a grid z_i = n_i delta_i with delta_i the power of two at most s_i / cells, s_i the smaller
standard deviation of the two Gaussians that code it (q's and p's), and each Gaussian is coded over the
integers within `window` standard deviations of its mean (constriction's QuantizedGaussian, 24-bit
probabilities). q's variance is lowered by delta^2 / 12 (Sheppard's correction), so that the rounded
latents carry the noise the network expects. A latent that falls outside p's window is pushed as the
window's edge followed by its distance past it (31 bits).

The stack starts from seeded pseudo-random words (the initial bits of bits-back). Only the part of the final
stack that differs from them is stored: the decoder regenerates the rest, and at the end it must be left
with exactly those words. The first batch holds one item and later batches grow with what has been coded
(`batch_plan`), so that the borrowed bits stay those of one item.

Determinism: the network runs in float32 (on CUDA without TF32, with deterministic kernels; on the CPU
with the encoder's thread count, which the file records) on batches whose composition is a function of the
item count alone; every parameter of a coder model is rounded to a grid first. The container stores the
model's hash (checked) and the device class and versions (reported when a decode fails), and a CRC-32 per
coding batch plus a SHA-256 of all images (checked).

Pure torch/numpy: no click, no file system, no printing.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import platform
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from . import conversions as C
from .coding_settings import Settings, batch_plan  # noqa: F401  (re-exported)
from .data import to_unit
from .errors import ArtifactError, UdiffError
from .likelihood import BINS, discretized_nll, recon_params
from .rng import NoiseSource, step_seed

MAGIC = b"UDZ\x1a"
FORMAT = 1
PRECISION = 24           # bits of every probability in constriction's models (fixed by its Python API)
PARAM_BITS = 16          # coder means and stds are rounded to 2^-16 of a grid cell
MEAN_BITS = 20           # the 256-way decoder's mean is rounded to 2^-20
ROWS = 1 << 16           # rows of the 256-way probability table built at once
_INITIAL, _SCRAMBLE = 0x0DD5EED, 0x5C4A  # streams of the seeded randomness


class NotFinite(UdiffError):
    exit_code = 1


def device_class(device) -> str:
    """What must match for bit-identical network outputs: cpu-ARCH or cuda-GPU NAME."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return "cuda-" + torch.cuda.get_device_name(dev).replace(" ", "_")
    return f"{dev.type}-{platform.machine()}"


@contextlib.contextmanager
def deterministic(device, threads: int = 0):
    """The same network outputs on both sides: float32 (no autocast), and on CUDA TF32 off, deterministic
    kernels and cuDNN without autotuning; on the CPU, whose kernels are deterministic for a given number of
    threads but not across numbers (a measured fact: a batch of one differs between 1 and 2 threads), the
    encoder's thread count."""
    cuda = torch.device(device).type == "cuda"
    cudnn = torch.backends.cudnn
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.deterministic, cudnn.benchmark)
    if threads:
        torch.set_num_threads(threads)
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32 = False, False
        cudnn.deterministic, cudnn.benchmark = True, False
    try:
        with torch.no_grad():
            yield
    finally:
        torch.set_num_threads(saved[0])
        if cuda:
            torch.use_deterministic_algorithms(saved[1])
            (torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.deterministic,
             cudnn.benchmark) = saved[2:]


def _round(v: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.round(v * float(1 << bits)) / float(1 << bits)


# ------------------------------------------------------------------------------------------------
# The chain


def check_model(model):
    """Refuse a model whose process has no reverse Gaussian of one number per component."""
    proc = model.process
    if "scalar" not in proc.traits:
        raise UdiffError(f"compress codes the discrete-time chain of a process with one number per component "
                         f"(vp, ve, sub-vp); this model's process ({proc.name}, k = {proc.k}) carries "
                         f"{proc.k}; use a model trained with [process] kind = \"vp\" (e.g. "
                         "recipes/vdm-fashion-mnist.toml)")


class Chain:
    """The discrete-time model with T steps as latents z_0..z_T: the noise levels, the standard deviations of
    q's and p's Gaussian for each latent, each latent's grid (a power of two) and window (integers)."""

    def __init__(self, model, settings: Settings, device):
        check_model(model)
        proc, T = model.process, settings.steps
        self.model, self.steps, self.proc = model, T, proc
        t_min = float(model.schedule.t_min)
        i = torch.arange(T + 1, dtype=torch.float64, device=device)
        times = t_min + (1.0 - t_min) * i / T  # the grid of likelihood.vlb_terms' discrete bound
        self.levels = [model.level(times[j:j + 1]) for j in range(T + 1)]
        self.shape = (1, 1) + tuple(model.event_shape)
        zero = torch.zeros(self.shape, dtype=torch.float64, device=device)
        one = torch.ones_like(zero)
        lv = self.levels

        def full(v):
            return v.double().expand(self.shape)

        # q: the marginal q(z_0 | x), then the forward steps q(z_i | z_{i-1})
        q = [full(proc.cov(lv[0])[..., 0, 0].sqrt())]
        q += [full(proc.transition(lv[j - 1], lv[j])[1][..., 0, 0].sqrt()) for j in range(1, T + 1)]
        # p: the reverse Gaussians p(z_i | z_{i+1}), then the prior
        p = [full(C.posterior(proc, zero, zero, lv[j + 1], lv[j])[1][..., 0, 0].sqrt()) for j in range(T)]
        p += [full(proc.prior_cov(lv[T])[..., 0, 0].sqrt().to(zero))]
        self.exponent = [torch.floor(torch.log2(torch.minimum(a, b) / settings.cells)) for a, b in zip(q, p)]
        self.delta = [torch.ldexp(one, e.to(torch.int32)) for e in self.exponent]
        self.window = [math.ceil(settings.window * float((torch.maximum(a, b) / d).max()))
                       for a, b, d in zip(q, p, self.delta)]
        if settings.sheppard:  # the rounding to the grid adds variance delta^2/12: take it out of q's
            q = [(a.square() - d.square() / 12.0).sqrt() for a, d in zip(q, self.delta)]
        self.q_std, self.p_std = q, p
        # bits per element to scramble before popping latent i: 5% more than the pop reads (the entropy of the
        # discretized q, log2(sqrt(2 pi e) std / delta), plus half a bit)
        self.scramble = [round(1.05 * (math.log2(4.1327 * float((a / d).max())) + 0.5), 6)
                         for a, d in zip(q, self.delta)]
        if not all(bool(torch.isfinite(a).all() and (a > 0).all()) for a in q + p):
            raise NotFinite("the chain's standard deviations are not finite and positive at these steps; check "
                            "the model's schedule or use fewer --steps")
        h = hashlib.sha256()  # what the decoder must rebuild exactly: grids, windows, scales as the coder sees them
        for e, a, b, d in zip(self.exponent, q, p, self.delta):
            for v in (e, _round(a / d, PARAM_BITS), _round(b / d, PARAM_BITS)):
                h.update(v.cpu().contiguous().numpy().tobytes())
        h.update(np.asarray(self.window, dtype=np.int64).tobytes() + np.asarray(self.scramble).tobytes())
        self.digest = h.digest()[:8]

    def value(self, n: torch.Tensor, i: int) -> torch.Tensor:
        """The latent z_i = n delta_i (float64, exact)."""
        return n.double() * self.delta[i]

    def q_mean(self, i: int, below: torch.Tensor) -> torch.Tensor:
        """Mean of q(z_0 | x) (below = x0 = model.encode(x)) or of q(z_i | z_{i-1}) (below = z_{i-1})."""
        if i == 0:
            return self.proc.mean_map(self.levels[0])[..., 0, 0] * below
        return self.proc.transition(self.levels[i - 1], self.levels[i])[0][..., 0, 0] * below

    def p_mean(self, i: int, above: torch.Tensor | None, rows: int) -> torch.Tensor:
        """Mean of p(z_i | z_{i+1} = above) (one network evaluation) or of the prior (i = T)."""
        if i == self.steps:
            return torch.zeros((rows,) + self.shape[1:], dtype=torch.float64, device=self.delta[0].device)
        lvl = self.levels[i + 1]
        eps = self.model.eps(above, lvl)
        if not bool(torch.isfinite(eps).all()):
            raise NotFinite(f"the network's output is not finite at step {i + 1} of {self.steps}; check the model")
        return C.posterior(self.proc, above, eps.double(), lvl, self.levels[i])[0].double()

    def x_probabilities(self, z0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, precision) per pixel of VDM's 256-way decoder given z_0, the mean rounded, flattened."""
        mean, prec = recon_params(self.model, z0, self.levels[0])
        return _round(mean, MEAN_BITS).reshape(-1), prec.expand_as(mean).reshape(-1)


# ------------------------------------------------------------------------------------------------
# The stack


class Drained(Exception):
    """The initial bits ran out (the encoder retries with more)."""


class Stack:
    """constriction's ANS stack, with the three kinds of models of the chain; symbols as torch tensors."""

    def __init__(self, words: np.ndarray, watch: bool = False):
        import constriction

        self.m = constriction.stream.model
        try:
            self.coder = constriction.stream.stack.AnsCoder(np.ascontiguousarray(words, dtype=np.uint32))
        except ValueError as e:
            raise ArtifactError(f"corrupted compressed data ({e})") from None
        self.watch = watch
        self._gauss = {}
        self._low, self._high = self.m.Uniform(1 << 16), self.m.Uniform(1 << 15)
        self._cat = self.m.Categorical(perfect=False)

    def words(self) -> np.ndarray:
        return self.coder.get_compressed()

    def bits(self) -> int:
        return int(self.coder.num_bits())

    def _model(self, k: int):
        if k not in self._gauss:
            self._gauss[k] = self.m.QuantizedGaussian(-k, k)
        return self._gauss[k]

    def _check(self):
        if self.watch and self.coder.num_words() < 4:
            raise Drained()

    @staticmethod
    def _params(mean, std, delta):
        u = mean / delta
        centre = torch.round(u)
        frac = _round(u - centre, PARAM_BITS)
        s = _round((std / delta).expand_as(u), PARAM_BITS)
        return centre.long(), frac.cpu().numpy().ravel(), s.cpu().numpy().ravel()

    def pop(self, mean, std, delta, k: int, escape: bool = False) -> torch.Tensor:
        """n ~ the Gaussian N(mean, std^2) on the grid delta (integers n, mean's shape)."""
        centre, frac, s = self._params(mean, std, delta)
        off = self.coder.decode(self._model(k), frac, s).astype(np.int64)
        if escape:  # the window's edges announce a symbol beyond them: its distance past the edge follows
            out = np.flatnonzero(np.abs(off) == k)
            if out.size:
                far = (self.coder.decode(self._high, out.size).astype(np.int64) << 16) | self.coder.decode(
                    self._low, out.size)
                off[out] += np.sign(off[out]) * far
        self._check()
        return centre + torch.from_numpy(off).reshape(centre.shape).to(centre.device)

    def push(self, n, mean, std, delta, k: int, escape: bool = False):
        """Push the integers n with the Gaussian N(mean, std^2) on the grid delta (the inverse of `pop`). With
        escape, a symbol k or more cells from the mean is pushed as the window's edge and its distance past it."""
        centre, frac, s = self._params(mean, std, delta)
        off = (n - centre).reshape(-1).cpu().numpy()
        far = np.abs(off) - k
        if not escape:  # the window's edges are symbols like the others (a pop lands there 5 times in 1e6)
            if int(far.max()) > 0:
                raise ArtifactError("corrupted compressed data (a latent outside its window)")
            self.coder.encode_reverse(off.astype(np.int32), self._model(k), frac, s)
            return
        out = np.flatnonzero(far >= 0)
        if out.size:
            if int(far.max()) >= 1 << 31:
                raise NotFinite(f"a latent lies {int(far.max())} grid cells from the model's mean: too far to code; "
                                "the model does not fit these images")
            self.coder.encode_reverse((far[out] & 0xFFFF).astype(np.int32), self._low)
            self.coder.encode_reverse((far[out] >> 16).astype(np.int32), self._high)
        self.coder.encode_reverse(np.clip(off, -k, k).astype(np.int32), self._model(k), frac, s)

    def scramble(self, bits: float, count: int, seed: int, batch: int, latent: int):
        """XOR the top bits of the stack (about count * bits + 64, in 16-bit chunks) with a keystream that is a
        function of (seed, batch, latent) alone: pop them as uniform symbols, XOR, push them back; its own
        inverse. The bits a q-pop reads were mostly just pushed with p, whose errors make them far from
        uniform; scrambled, they are uniform, so that the popped latents are draws from q (docs/compression.md)."""
        m = math.ceil((count * bits + 64) / 16)
        raw = self.coder.decode(self._low, m)
        self._check()
        stream = step_seed(seed, latent, salt=_SCRAMBLE) & 0xFFFFFFFF
        pad = (NoiseSource([batch]).uniform_bits(stream, m)[0].numpy() & 0xFFFF).astype(np.int32)
        self.coder.encode_reverse(np.bitwise_xor(raw, pad).astype(np.int32), self._low)

    def _tables(self, mean, prec):
        centres = (2.0 * torch.arange(BINS, dtype=torch.float64, device=mean.device) + 1.0) / BINS - 1.0
        for a in range(0, mean.numel(), ROWS):
            m, p = mean[a:a + ROWS, None], prec[a:a + ROWS, None]
            yield a, torch.exp(-discretized_nll(centres, m, p)).cpu().numpy()

    def push_pixels(self, images: torch.Tensor, mean, prec):
        """Push uint8 pixels with VDM's 256-way decoder of the given means and precisions (flat)."""
        sym = images.reshape(-1).to(torch.int32).cpu().numpy()
        for a, table in reversed(list(self._tables(mean, prec))):
            self.coder.encode_reverse(sym[a:a + len(table)], self._cat, table)

    def pop_pixels(self, mean, prec) -> torch.Tensor:
        out = [self.coder.decode(self._cat, table) for _, table in self._tables(mean, prec)]
        self._check()
        return torch.from_numpy(np.concatenate(out).astype(np.uint8))


def encode_batch(stack: Stack, chain: Chain, images: torch.Tensor, batch: int = 0, seed: int = 0):
    """Push a batch of uint8 images (B, *event) onto the stack (bits back from q, Bit-Swap order); `batch`
    and `seed` key the scrambling."""
    c, dev = chain, chain.delta[0].device
    rows = images.shape[0]
    count = images.numel()
    x0 = c.model.encode(to_unit(images.to(dev)).double())
    stack.scramble(c.scramble[0], count, seed, batch, 0)
    n_low = stack.pop(c.q_mean(0, x0), c.q_std[0], c.delta[0], c.window[0])                   # z_0 ~ q(z_0 | x)
    z_low = c.value(n_low, 0)
    stack.push_pixels(images, *c.x_probabilities(z_low))                                       # x ~ p(x | z_0)
    for i in range(1, c.steps + 1):
        stack.scramble(c.scramble[i], count, seed, batch, i)
        n = stack.pop(c.q_mean(i, z_low), c.q_std[i], c.delta[i], c.window[i])                # z_i ~ q(z_i | z_i-1)
        z = c.value(n, i)
        stack.push(n_low, c.p_mean(i - 1, z, rows), c.p_std[i - 1], c.delta[i - 1], c.window[i - 1],
                   escape=True)                                                                # z_i-1 ~ p(. | z_i)
        n_low, z_low = n, z
    stack.push(n_low, c.p_mean(c.steps, None, rows), c.p_std[-1], c.delta[-1], c.window[-1], escape=True)  # prior


def decode_batch(stack: Stack, chain: Chain, rows: int, batch: int = 0, seed: int = 0) -> torch.Tensor:
    """Pop a batch of `rows` images off the stack: `encode_batch` run backwards."""
    c = chain
    count = rows * math.prod(c.model.event_shape)
    n = stack.pop(c.p_mean(c.steps, None, rows), c.p_std[-1], c.delta[-1], c.window[-1], escape=True)
    z = c.value(n, c.steps)
    for i in range(c.steps, 0, -1):
        n_low = stack.pop(c.p_mean(i - 1, z, rows), c.p_std[i - 1], c.delta[i - 1], c.window[i - 1], escape=True)
        z_low = c.value(n_low, i - 1)
        stack.push(n, c.q_mean(i, z_low), c.q_std[i], c.delta[i], c.window[i])
        stack.scramble(c.scramble[i], count, seed, batch, i)
        n, z = n_low, z_low
    images = stack.pop_pixels(*c.x_probabilities(z)).reshape((rows,) + tuple(c.model.event_shape))
    x0 = c.model.encode(to_unit(images.to(z.device)).double())
    stack.push(n, c.q_mean(0, x0), c.q_std[0], c.delta[0], c.window[0])
    stack.scramble(c.scramble[0], count, seed, batch, 0)
    return images


# ------------------------------------------------------------------------------------------------
# The container (.udz)
#
#   magic "UDZ\x1a", format (uint16), SHA-256 of everything after it (16 bytes), then
#   model sha256 (32 bytes), images sha256 (16), chain digest (8), device class, torch version, coder version
#   (each a uint8 length and ASCII), CPU threads (uint16), C H W (uint16), n, T (uint32), cells, window,
#   sheppard (uint8), coder precision (uint8), batch (uint16), growth (uint8), seed, initial words, words
#   regenerated from them (uint32), a CRC-32 per coding batch (uint32), and the ANS words (uint32), all little-endian.

_FIXED = struct.Struct("<32s16s8s")
_NUMBERS = struct.Struct("<HHHHIIBBBBHBIII")


@dataclass
class Header:
    model_sha256: str
    images_sha256: bytes
    chain_digest: bytes
    device: str
    torch_version: str
    coder: str
    threads: int       # CPU threads of the network (0 on CUDA)
    shape: tuple
    n: int
    settings: Settings
    precision: int
    pool: int          # initial words
    prefix: int        # of them, the ones the file leaves out (unchanged at the bottom of the stack)
    checksums: list


def _text(s: str) -> bytes:
    b = s.encode("ascii", "replace")[:255]
    return bytes([len(b)]) + b


def pack(header: Header, words: np.ndarray) -> bytes:
    s = header.settings
    body = (_FIXED.pack(bytes.fromhex(header.model_sha256), header.images_sha256, header.chain_digest)
            + _text(header.device) + _text(header.torch_version) + _text(header.coder)
            + _NUMBERS.pack(header.threads, *header.shape, header.n, s.steps, s.cells, s.window, int(s.sheppard),
                            header.precision, s.batch, s.growth, s.seed, header.pool, header.prefix)
            + np.asarray(header.checksums, dtype="<u4").tobytes() + np.asarray(words, dtype="<u4").tobytes())
    return MAGIC + struct.pack("<H", FORMAT) + hashlib.sha256(body).digest()[:16] + body


def unpack(blob: bytes, name: str = "-") -> tuple[Header, np.ndarray]:
    """Parse and verify a .udz file; one-line ArtifactError for anything that is not a whole, intact one."""
    if len(blob) < 6 or blob[:4] != MAGIC:
        raise ArtifactError(f"{name}: not a udiff compressed file (no UDZ magic); give a file made by udiff compress")
    (fmt,) = struct.unpack("<H", blob[4:6])
    if fmt != FORMAT:
        raise ArtifactError(f"{name}: compressed file format {fmt}; this udiff reads format {FORMAT}; decode it with "
                            "the udiff version that wrote it")
    digest, body = blob[6:22], blob[22:]
    if len(digest) < 16 or hashlib.sha256(body).digest()[:16] != digest:
        raise ArtifactError(f"{name}: corrupted or truncated compressed file (its SHA-256 does not match); "
                            "nothing can be decoded from it")
    try:
        model_sha, images_sha, chain_digest = _FIXED.unpack_from(body, 0)
        pos, texts = _FIXED.size, []
        for _ in range(3):
            k = body[pos]
            texts.append(body[pos + 1:pos + 1 + k].decode("ascii"))
            pos += 1 + k
        nums = _NUMBERS.unpack_from(body, pos)
        pos += _NUMBERS.size
    except (struct.error, IndexError, UnicodeDecodeError):
        raise ArtifactError(f"{name}: truncated compressed file header") from None
    threads, c, h, w, n, steps, cells, window, sheppard, precision, batch, growth, seed, pool, prefix = nums
    if min(n, steps, cells, window, batch, growth) < 1 or prefix > pool:
        raise ArtifactError(f"{name}: compressed file header holds impossible values; the file is corrupted")
    settings = Settings(steps=steps, cells=cells, window=window, batch=batch, growth=growth, seed=seed,
                        sheppard=bool(sheppard))
    nb = len(batch_plan(n, batch, growth))
    rest = body[pos:]
    if len(rest) < 4 * nb or (len(rest) - 4 * nb) % 4:
        raise ArtifactError(f"{name}: truncated compressed file")
    checks = np.frombuffer(rest[:4 * nb], dtype="<u4").astype(np.uint32).tolist()
    words = np.frombuffer(rest[4 * nb:], dtype="<u4").astype(np.uint32)
    header = Header(model_sha.hex(), images_sha, chain_digest, texts[0], texts[1], texts[2], threads, (c, h, w), n,
                    settings,
                    precision, pool, prefix, checks)
    return header, words


def initial_words(seed: int, count: int) -> np.ndarray:
    """The seeded initial bits: `count` 32-bit words (counter-based: word j depends on (seed, j) alone);
    the top word is nonzero, as ANS data must end."""
    words = NoiseSource([seed & 0xFFFFFFFF]).uniform_bits(_INITIAL, count)[0].numpy().astype(np.uint32)
    words[-1] |= 1
    return words


def _images_digest(images: torch.Tensor) -> bytes:
    return hashlib.sha256(images.contiguous().numpy().tobytes()).digest()[:16]


def _coder_version() -> str:
    import constriction

    return "constriction-" + getattr(constriction, "__version__", _dist_version("constriction"))


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


# ------------------------------------------------------------------------------------------------
# Compress / decompress


@dataclass
class Coded:
    blob: bytes
    n: int
    dims: int
    net_bits: int            # growth of the stack: sum over items of -log2 p(x, z) + log2 q(z | x), realized
    first_item_bits: int     # what the file would hold after the first item (it alone: stack words not regenerated)
    first_item_net_bits: int
    header_bytes: int
    seconds: float

    @property
    def bits_per_dim(self) -> float:
        return 8.0 * len(self.blob) / (self.n * self.dims)

    @property
    def amortized_bits_per_dim(self) -> float | None:
        """What each item after the first cost: the file less its header and the first item's part."""
        if self.n < 2:
            return None
        return (8.0 * (len(self.blob) - self.header_bytes) - self.first_item_bits) / ((self.n - 1) * self.dims)


def _check_images(model, images: torch.Tensor):
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise UdiffError(f"compress codes uint8 images N×C×H×W, got {str(images.dtype).replace('torch.', '')} "
                         f"{tuple(images.shape)}")
    if tuple(images.shape[1:]) != tuple(model.event_shape):
        raise UdiffError(f"the images are {tuple(images.shape[1:])} but the model was trained on "
                         f"{tuple(model.event_shape)}; give images like its training data")
    if images.shape[0] == 0:
        raise UdiffError("no images to compress")


def _prepare(model, device):
    model.prepare(device)
    model.eval()
    model.requires_grad_(False)


def compress(model, images: torch.Tensor, model_sha256: str, settings: Settings = Settings(), device="cpu",
             progress=None) -> Coded:
    """Code uint8 images (N, C, H, W) with the model (EMA weights loaded): the .udz bytes and what they cost."""
    import time

    check_model(model)
    _check_images(model, images)
    images = images.contiguous().cpu()
    n, dims = images.shape[0], math.prod(images.shape[1:])
    sizes = batch_plan(n, settings.batch, settings.growth)
    dev = torch.device(device)
    threads = torch.get_num_threads() if dev.type == "cpu" else 0
    t0 = time.perf_counter()
    with deterministic(dev, threads):
        _prepare(model, dev)
        chain = Chain(model, settings, dev)
        count = max(4096, (64 * dims * max(sizes)) // 32)
        for _ in range(6):
            try:
                words, first, first_net, net, checks, prefix = _encode(chain, images, sizes, settings.seed, count,
                                                                       progress)
                break
            except Drained:
                count *= 8
        else:  # pragma: no cover - 64 bits per dimension and batch item, times 8^6, ran out
            raise UdiffError("the initial bits ran out; this model borrows far more than it returns")
    header = Header(model_sha256, _images_digest(images), chain.digest, device_class(dev),
                    torch.__version__.split("+")[0], _coder_version(), threads, tuple(images.shape[1:]), n, settings,
                    PRECISION, count, prefix, checks)
    blob = pack(header, words)
    return Coded(blob=blob, n=n, dims=dims, net_bits=net, first_item_bits=first, first_item_net_bits=first_net,
                 header_bytes=len(blob) - 4 * len(words), seconds=time.perf_counter() - t0)


def _stored(words: np.ndarray, pool: np.ndarray) -> int:
    """How many bottom words of the stack are still the initial ones (the file leaves them out)."""
    m = min(len(words), len(pool))
    diff = np.flatnonzero(words[:m] != pool[:m])
    return int(diff[0]) if diff.size else m


def _encode(chain, images, sizes, seed, count, progress=None):
    pool = initial_words(seed, count)
    stack = Stack(pool, watch=True)
    start = stack.bits()
    checks, first, first_net, a = [], 0, 0, 0
    for b, s in enumerate(sizes):
        batch = images[a:a + s]
        encode_batch(stack, chain, batch, b, seed)
        checks.append(zlib.crc32(batch.numpy().tobytes()))
        if progress:
            progress(s)
        if b == 0:
            w = stack.words()
            first = 32 * (len(w) - _stored(w, pool))
            first_net = stack.bits() - start
        a += s
    words = stack.words()
    prefix = _stored(words, pool)
    return words[prefix:], first, first_net, stack.bits() - start, checks, prefix


def decompress(model, blob: bytes, model_sha256: str, device="cpu", name: str = "-", progress=None):
    """Decode a .udz file with the model it was made with: (uint8 images (N, C, H, W), header, seconds)."""
    import time

    header, words = unpack(blob, name)
    if header.model_sha256 != model_sha256:
        raise ArtifactError(f"{name}: was compressed with model {header.model_sha256[:12]}…, not this one "
                            f"({model_sha256[:12]}…); give the model it was made with")
    check_model(model)
    if tuple(header.shape) != tuple(model.event_shape):  # pragma: no cover - the model hash matched
        raise ArtifactError(f"{name}: holds images of shape {header.shape}, the model makes {model.event_shape}")
    dev = torch.device(device)
    here = (device_class(dev), torch.__version__.split("+")[0], _coder_version())
    made = (header.device, header.torch_version, header.coder)
    where = ("" if here == made else f" (it was encoded on {made[0]} with torch {made[1]} and {made[2]}; this is "
             f"{here[0]} with torch {here[1]} and {here[2]}: decode it where it was encoded)")
    sizes = batch_plan(header.n, header.settings.batch, header.settings.growth)
    t0 = time.perf_counter()
    out = torch.empty((header.n,) + tuple(header.shape), dtype=torch.uint8)
    with deterministic(dev, header.threads if dev.type == "cpu" else 0):
        _prepare(model, dev)
        chain = Chain(model, header.settings, dev)
        if chain.digest != header.chain_digest:
            raise ArtifactError(f"{name}: the model's chain (grid and scales at T = {header.settings.steps}) "
                                f"evaluates differently here than when it was encoded{where}")
        pool = initial_words(header.settings.seed, header.pool)
        stack = Stack(np.concatenate([pool[:header.prefix], words]))
        end = header.n
        try:
            for b in range(len(sizes) - 1, -1, -1):
                s = sizes[b]
                images = decode_batch(stack, chain, s, b, header.settings.seed)
                if zlib.crc32(images.numpy().tobytes()) != header.checksums[b]:
                    raise ArtifactError(f"{name}: items {end - s}..{end - 1} did not decode bit-exactly (CRC-32 "
                                        f"mismatch){where or ': the network outputs differ from the encoder'}")
                out[end - s:end] = images
                end -= s
                if progress:
                    progress(s)
        except (ValueError, RuntimeError, OverflowError) as e:  # constriction on garbage
            raise ArtifactError(f"{name}: decoding failed ({str(e).splitlines()[0]}){where}") from None
        rest = stack.words()
        if len(rest) != header.pool or not np.array_equal(rest, pool):
            raise ArtifactError(f"{name}: the decoder did not return the initial bits exactly{where}")
    if _images_digest(out) != header.images_sha256:
        raise ArtifactError(f"{name}: the decoded images do not match the stored SHA-256{where}")
    return out, header, time.perf_counter() - t0
