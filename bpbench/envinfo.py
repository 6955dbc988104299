"""What a measurement was taken on: versions, machine, device."""

from __future__ import annotations

import os
import platform

import bpbench


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect(device=None) -> dict:
    import torch
    cuda_name = None
    if device is not None and getattr(device, "type", None) == "cuda":
        cuda_name = torch.cuda.get_device_name(device)
    return {
        "bpbench": bpbench.__version__,
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda_device": cuda_name,
    }
