"""The machine a run lands on: its device, its number format, and its peak FLOP rate for MFU.

MFU (model FLOPs utilisation, PaLM, Chowdhery et al. 2022) is the model's useful FLOPs per
second over the peak of the hardware it ran on.  The peak must be this machine's, never another's:
on a GPU it comes from a table of the vendors' dense peaks, on a CPU (and unknown GPUs) from a
short matrix-multiply probe run once per process.
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import re
import time

import torch

from smallgpt.errors import UserError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# dense (no sparsity) tensor-core peaks in FLOP/s for bf16/fp16, by the model name in the device's name:
# whole words, most specific first, so that an "H200 NVL" is not an "H200" and an "RTX A1000" not an "A10".
# The vendor's datasheets give the peaks with 2:4 sparsity, twice these: H800 SXM 1,979 and PCIe 1,513 TFLOPS
# (NVIDIA H800 datasheet, as H100 SXM and PCIe); per GPU of a GB200 NVL72, 5 PFLOPS (NVIDIA's GB200 NVL72
# specifications), of an HGX B200, 4.5 PFLOPS.
GPU_PEAKS = [
    ("GH200", 989e12), ("H200 NVL", 835e12), ("H200", 989e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12),
    ("H100", 989e12), ("H800 PCIe", 756e12), ("H800", 989e12), ("GB200", 2500e12), ("B200", 2250e12),
    ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("A10G", 70e12),
    ("A10", 125e12), ("RTX 4090", 165e12), ("RTX 3090", 71e12), ("V100", 125e12), ("T4", 65e12),
]


def gpu_peak(name: str) -> float | None:
    """The dense bf16/fp16 peak of the GPU named ``name`` (as torch.cuda.get_device_name says it), if known."""
    for model, peak in GPU_PEAKS:
        if re.search(rf"(?<![\w-]){re.escape(model)}(?![\w])", name):
            return peak
    return None


def native_bf16(device: torch.device) -> bool:
    """Whether the GPU computes bf16 itself (Ampere and newer); current torch also counts emulation,
    which on a T4 or V100 runs bf16 far slower than fp16 with a GradScaler."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch before the including_emulation argument: it did not count emulation then
        return torch.cuda.is_bf16_supported()


def device_name(device: torch.device) -> str:
    """What the device is, in the vendor's words: the GPU's name, or the CPU's model name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor() or platform.machine()


def pick_device(name: str = "auto", key: str = "train.device") -> torch.device:
    """'auto' -> cuda, then mps, then cpu; otherwise the named device, checked to exist.
    ``key`` is the setting the user wrote it in, named in the error messages."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--{key}: unknown device {name!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--{key}={name}: no CUDA GPU is available here; use --{key}=auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--{key}={name}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"--{key}={name}: MPS is not available here; use --{key}=auto or cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"--{key}={name}: only cpu, cuda and mps are supported")
    return device


def pick_dtype(name: str, device: torch.device, key: str = "train.dtype") -> torch.dtype:
    """'auto' -> bf16 on CUDA GPUs that support it, else fp16 (with a GradScaler); fp32 on cpu and mps."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if native_bf16(device) else torch.float16
        return torch.float32
    dtype = DTYPES[name]
    if dtype == torch.float16 and device.type != "cuda":
        raise UserError(f"--{key}=float16 needs a CUDA GPU (it trains with a GradScaler); "
                        f"on {device.type} use float32 or bfloat16")
    if dtype == torch.bfloat16 and device.type == "cuda" and not native_bf16(device):
        raise UserError(f"--{key}=bfloat16: {torch.cuda.get_device_name(device)} has no native bfloat16 "
                        f"(it would be emulated, slowly); use --{key}=float16 (with a GradScaler) or auto")
    return dtype


def setup(device: torch.device, deterministic: bool = False) -> None:
    """Process-wide settings: TF32 matmuls on NVIDIA GPUs (fp32 tensors, 10-bit-mantissa math); with
    ``deterministic`` (train.deterministic), kernels that give the same bits every run on CUDA.

    A CPU's kernels are deterministic already.  On CUDA some are not (atomic adds: flash attention's backward,
    index_add, scatter_add), and cuBLAS needs a fixed workspace to be (its CUBLAS_WORKSPACE_CONFIG, set before
    the first matmul: this is called before the model is built).  torch.use_deterministic_algorithms makes
    torch pick a deterministic kernel for every op that has one and raise for one that has none."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass: matmuls in ``dtype``, weights and optimizer in fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """Peak FLOP/s of one device for ``dtype``: the GPU table for bf16/fp16, else a measured matmul."""
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        peak = gpu_peak(torch.cuda.get_device_name(device))
        if peak is not None:
            return peak
    return _measured_peak(str(device), dtype)


def peak_source(device: torch.device, dtype: torch.dtype) -> str:
    """Where :func:`peak_flops` takes the peak of ``device`` for ``dtype`` from, in words."""
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16) and gpu_peak(device_name(device)):
        return "the card's dense peak (hardware.GPU_PEAKS)"
    n, repeats = probe_shape(device)
    return f"the fastest of {repeats} {n}^3 matmuls (hardware.peak_flops)"


def probe_shape(device: torch.device) -> tuple[int, int]:
    """(side, timed calls) of the matmul probe a device's peak is measured with: PROBE_N^3 three times on a CPU;
    on a GPU, whose card is not in GPU_PEAKS (or in fp32/TF32, which it does not list), GPU_PROBE_N^3 ten times,
    since a 2048^3 matmul is too small to fill a large GPU (on a Hopper it runs far below the card's peak, so MFU
    against it reads too high)."""
    return (GPU_PROBE_N, 10) if device.type == "cuda" else (PROBE_N, 3)


class MatmulProbe:
    """The peak a machine without a known table entry is measured against: square matmuls of
    ``PROBE_N`` into a preallocated output, each call timed; the peak is the fastest call.

    The fastest, not the median: a peak is the best this hardware did in this process, and a busy
    machine only ever slows a run down, so MFU against it stays conservative.  train.py measures it
    once at the start; tools/bench.py times the same probe in rounds with the steps it measures.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype, n: int | None = None):
        self.n = n or PROBE_N
        self.device = device
        self.a, self.b, self.out = (torch.randn(self.n, self.n, device=device).to(dtype) for _ in range(3))
        self.times: list[float] = []

    def __call__(self) -> None:
        sync(self.device)
        t0 = time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        sync(self.device)
        self.times.append(time.perf_counter() - t0)

    @property
    def peak_flops(self) -> float:
        return 2.0 * self.n**3 / min(self.times)


PROBE_N = 2048  # the matmul whose FLOP rate is a CPU's peak for MFU
GPU_PROBE_N = 8192  # a GPU's (probe_shape)


@functools.lru_cache(maxsize=None)
def _measured_peak(device: str, dtype: torch.dtype) -> float:
    """The probe's peak (probe_shape) after one untimed warm-up call, once per process, device and dtype."""
    n, repeats = probe_shape(torch.device(device))
    probe = MatmulProbe(torch.device(device), dtype, n)
    probe()
    probe.times.clear()
    for _ in range(repeats):
        probe()
    return probe.peak_flops


@functools.lru_cache(maxsize=None)
def quick_peak(device: torch.device, dtype: torch.dtype) -> float:
    """A cheaper probe (1024^3 matmuls, the fastest of 3) for choices between number formats, once per
    process: a CPU without bf16 units emulates bf16 matmuls, and this says so in a fraction of a second."""
    probe = MatmulProbe(device, dtype, n=1024)
    for _ in range(4):
        probe()
    probe.times.pop(0)  # the warm-up
    return probe.peak_flops


def rough_peak(device: torch.device, dtype: torch.dtype) -> float:
    """A peak for guesses made before any step ran (how long a step will take): the GPU table where it
    knows the card, else the quick probe, a fraction of a second instead of the full one's."""
    if device.type == "cuda" and dtype in (torch.bfloat16, torch.float16):
        peak = gpu_peak(torch.cuda.get_device_name(device))
        if peak is not None:
            return peak
    return quick_peak(device, dtype)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer around it measures the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
