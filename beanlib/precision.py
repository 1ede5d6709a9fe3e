"""Which precision the trials' hardware runs fastest: bfloat16 where it computes it natively, float32 elsewhere.

Read without TensorFlow, so the driver decides before any trial starts: a CPU's flags (Linux /proc/cpuinfo) and an
NVIDIA GPU's compute capability (`nvidia-smi`). On a CPU without native bf16 (AVX2 only) Keras still runs
`mixed_bfloat16`, converting every value, which is slower than float32: `emulated` says so.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 CPUs that multiply bf16 in hardware
MIN_BF16_CAPABILITY = 8.0  # NVIDIA Ampere and later: bf16 tensor cores
AUTO = "auto"


@dataclass(frozen=True)
class Device:
    """What decides the precision: the CPU's flags, the GPUs' compute capabilities, and which machine it was."""

    cpu_flags: frozenset[str]
    gpu_capabilities: tuple[float, ...] = ()
    where: str = "this machine"


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of /proc/cpuinfo's text (the first processor's: a machine's cores share them)."""
    for line in cpuinfo.splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def gpu_capabilities(smi: str) -> tuple[float, ...]:
    """The compute capabilities in `nvidia-smi --query-gpu=compute_cap --format=csv,noheader` output."""
    found = []
    for line in smi.splitlines():
        try:
            found.append(float(line.strip()))
        except ValueError:
            continue
    return tuple(found)


def probe(where: str = "this machine") -> Device:
    """This machine's Device: /proc/cpuinfo where there is one, `nvidia-smi` where it is installed."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = cpu_flags(f.read())
    except OSError:
        flags = frozenset()
    capabilities: tuple[float, ...] = ()
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                                  capture_output=True, text=True, timeout=30)
            capabilities = gpu_capabilities(done.stdout)
        except (OSError, subprocess.SubprocessError):
            pass
    return Device(flags, capabilities, where)


def choose(device: Device, on_gpu: bool) -> tuple[str, str]:
    """(the precision `auto` means on `device`, why): bf16 where the trials' processor computes it natively."""
    if on_gpu and device.gpu_capabilities:
        lowest = min(device.gpu_capabilities)
        if lowest >= MIN_BF16_CAPABILITY:
            return "mixed_bfloat16", f"GPU compute capability {lowest:g} on {device.where}"
        return "float32", f"GPU compute capability {lowest:g}, below {MIN_BF16_CAPABILITY:g}, on {device.where}"
    native = sorted(set(NATIVE_BF16_FLAGS) & device.cpu_flags)
    if native:
        return "mixed_bfloat16", f"CPU flag {native[0]} on {device.where}"
    return "float32", f"no CPU flag {' or '.join(NATIVE_BF16_FLAGS)} on {device.where}"


def emulated(precision: str, device: Device, on_gpu: bool) -> str | None:
    """A line for bf16 asked of hardware that only emulates it (it runs, slower than float32); None otherwise."""
    if precision != "mixed_bfloat16" or choose(device, on_gpu)[0] == "mixed_bfloat16":
        return None
    return (f"warning: --precision mixed_bfloat16 on {device.where} is emulated ({choose(device, on_gpu)[1]}): it runs, "
            "slower than float32; --precision auto picks float32 there")
