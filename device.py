"""
Device and precision defaults: which device and dtype a script uses when the config does not
say (default_device, default_dtype, device_defaults), the autocast context for the forward
pass, and the GPU peaks that MFU divides by.
"""

import os
from contextlib import nullcontext

import torch

# Dense (no sparsity) bf16/fp16 tensor-core peaks from NVIDIA's data sheets, in FLOP/s, by a
# piece of torch.cuda.get_device_name(); the first match wins, so the more specific come first.
GPU_PEAK_FLOPS = (('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H100', 989e12), ('H200', 989e12),
                  ('B200', 2250e12), ('A100', 312e12), ('L40S', 362e12), ('L40', 181e12), ('L4', 121e12),
                  ('A10', 125e12))


def peak_flops_of(device, dtype):
    """The peak FLOP/s that MFU divides by: a known CUDA GPU in bf16/fp16, else 0 (unknown:
    CPUs, MPS, fp32, other GPUs; pass peak_flops= to train.py or tools/bench.py)."""
    if device_type_of(device) != 'cuda' or dtype == 'float32' or not torch.cuda.is_available():
        return 0.0
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAK_FLOPS if key in name), 0.0)


def device_type_of(device):
    return 'cuda' if 'cuda' in device else 'mps' if 'mps' in device else 'cpu'


def default_device():
    if torch.cuda.is_available():
        return 'cuda'
    if torch.backends.mps.is_available():
        return 'mps'
    return 'cpu'


def default_dtype(device):
    """bf16 where the GPU computes it natively, else fp16 on GPUs; fp32 on CPU, where low
    precision autocast is slow and fp16 gradient scaling is not supported."""
    if device_type_of(device) == 'cuda':
        return 'bfloat16' if native_bf16(device) else 'float16'
    return 'float32'


def native_bf16(device):
    """Does the CUDA GPU `device` have bf16 in hardware: compute capability 8.0 or more (A100,
    H100, ...)? V100 and T4 only emulate it, slowly and without flash attention, and
    torch.cuda.is_bf16_supported() counts that as support (torch >= 2.3; including_emulation=False
    turns it off from 2.4). This reads the GPU's properties and allocates nothing. A bare 'cuda'
    under torchrun is this process's GPU, LOCAL_RANK, which train.py selects only later: no
    process probes cuda:0 unless cuda:0 is its own."""
    if not torch.cuda.is_available():
        return False  # the caller's device check says what to do
    if torch.version.hip:
        return True  # ROCm: as torch.cuda.is_bf16_supported
    index = torch.device(device).index
    index = int(os.environ.get('LOCAL_RANK', 0)) if index is None else index
    return index < torch.cuda.device_count() and torch.cuda.get_device_capability(index) >= (8, 0)


def device_defaults(config):
    """The settings that follow config['device'] unless set: dtype, and compile (on for CUDA).
    For configurator.configure(..., derived=device_defaults)."""
    return {'dtype': default_dtype(config['device']), 'compile': device_type_of(config['device']) == 'cuda'}


DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def autocast_context(device, dtype):
    """Mixed precision for the forward pass; fp32 runs as is."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype '{dtype}': use one of {', '.join(DTYPES)}.")
    if dtype == 'float32':
        return nullcontext()
    return torch.autocast(device_type=device_type_of(device), dtype=DTYPES[dtype])
