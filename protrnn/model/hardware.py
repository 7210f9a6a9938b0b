"""What this machine's arithmetic can do, for choosing precision: which bf16 matrix features the CPU has
(:func:`cpu_bf16_flags`), whether bf16 runs natively on a device (:func:`bf16_is_native`), and where the recurrent
encoder must leave bf16 autocast (:func:`recurrence_autocast`). Used by the encoder, the contact model's
``resolve_precision`` and the training CLI's automatic ``trainer.precision``.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch


@functools.cache
def cpu_bf16_flags() -> tuple[str, ...]:
    """The bf16 matrix features of this CPU that oneDNN uses: ``avx512_bf16`` and/or ``amx_bf16`` (empty when none).

    Asks torch first (``torch.cpu._is_avx512_bf16_supported`` / ``_is_amx_tile_supported``, cpuid-based), then the
    ``flags`` line of ``/proc/cpuinfo`` (Linux) when those private helpers are missing.
    """
    found: list[str] = []
    probes = (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx_bf16", "_is_amx_tile_supported"))
    if all(hasattr(torch.cpu, probe) for _, probe in probes):
        return tuple(flag for flag, probe in probes if getattr(torch.cpu, probe)())
    cpuinfo = Path("/proc/cpuinfo")
    try:
        text = cpuinfo.read_text(errors="replace") if cpuinfo.is_file() else ""
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            found = [flag for flag, _ in probes if flag in flags]
            break
    return tuple(found)


def bf16_is_native(device: str | torch.device) -> bool:
    """Whether bfloat16 matrix arithmetic runs natively (not emulated) on ``device``: a CUDA GPU with bf16 support,
    or a CPU with AVX512-BF16 / AMX-BF16 and oneDNN (see :func:`cpu_bf16_flags`)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(cpu_bf16_flags()) and torch.backends.mkldnn.is_available()
    return False


def _cpu_autocast_is_bf16() -> bool:
    try:
        return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    except TypeError:  # torch < 2.4: the CPU-specific calls
        return torch.is_autocast_cpu_enabled() and torch.get_autocast_cpu_dtype() == torch.bfloat16


def recurrence_autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The autocast state a recurrence on ``device`` runs under. CPU autocast in bfloat16 hands LSTM layers to
    oneDNN's bf16 RNN kernel, which cannot run on a CPU without native bf16: there torch 2.13 fails with "could not
    create a primitive descriptor for the LSTM forward propagation primitive" (seen on an AMD EPYC without AVX512).
    On such a CPU, under bf16 autocast, the recurrence leaves autocast and runs in float32, as prediction always runs
    it (:meth:`protrnn.model.contact_model.ContactModel.predict_proba`); everywhere else (native-bf16 CPUs, GPUs, no
    autocast) nothing changes."""
    if device.type == "cpu" and _cpu_autocast_is_bf16() and not bf16_is_native("cpu"):
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()
