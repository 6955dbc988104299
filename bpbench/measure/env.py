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
    cuda = {}
    if device is not None and getattr(device, "type", None) == "cuda":
        cuda_name = torch.cuda.get_device_name(device)
        major, minor = torch.cuda.get_device_capability(device)
        cuda = {"tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                         "cudnn": torch.backends.cudnn.allow_tf32},
                "cuda_driver": cuda_driver(), "cuda_capability": f"{major}.{minor}"}
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
        # What changes a measurement without changing the code: TF32 matrix products, and
        # CUDA_LAUNCH_BLOCKING (every launch waits: step times then include the host's sync).
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_launch_blocking": os.environ.get("CUDA_LAUNCH_BLOCKING"),
        "tf32": None, "cuda_driver": None, "cuda_capability": None,
        **cuda,
    }


def cuda_driver() -> str | None:
    """The NVIDIA driver: its version from NVML (pynvml, which torch.cuda also uses when
    installed), else the CUDA version the driver supports (cuDriverGetVersion of libcuda)."""
    try:
        import pynvml
        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:   # no pynvml or no NVML: ask the driver library itself
        pass
    try:
        import ctypes
        n = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(n)) == 0:
            return f"supports CUDA {n.value // 1000}.{n.value % 1000 // 10}"
    except (OSError, AttributeError):
        pass
    return None
