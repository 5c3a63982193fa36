"""
Checkpoints and the device/precision set-up shared by train.py, sample.py and bench.py.

A checkpoint is a dict saved with torch.save, with nanoGPT's keys plus a few:
    model          state_dict of the bare model (no DDP 'module.' or compile '_orig_mod.' prefixes)
    optimizer      optimizer state_dict             scaler   GradScaler state (fp16) or None
    model_type     'gpt' or 'loop'                  model_args  GPTConfig fields
    iter_num       iterations done                  best_val_loss
    config         the resolved training config     meta     the dataset's meta.json (tokenizer)
    rng            RNG states {'torch', 'cuda'}     tokens, time_s  tokens seen and training wall time so far
"""

import os
from contextlib import nullcontext

import torch

from model import build_model


class CheckpointError(Exception):
    """A missing or unusable checkpoint; the message says what to do."""


def save_checkpoint(obj, path):
    """Write atomically: a crash mid-save leaves the previous file at `path` intact."""
    tmp = path + '.tmp'
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except RuntimeError as e:
        # torch's zip writer reports a write that failed (a full disk) as a RuntimeError whose
        # context is the OSError: raise that, so a failed write is always an OSError to callers
        if isinstance(e.__context__, OSError):
            raise e.__context__ from None
        raise
    finally:
        if os.path.exists(tmp):  # the save failed part-way: drop the partial file
            os.remove(tmp)


def load_checkpoint(out_dir, which='last', device='cpu'):
    """Load out_dir/{which}.pt ('last' or 'best')."""
    path = os.path.join(out_dir, f'{which}.pt')
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}: train one first (python train.py ... "
                              f"--out_dir={out_dir}) or point --out_dir at a training run.")
    try:
        # weights_only=False: the checkpoint also holds RNG states and the config
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as e:
        raise CheckpointError(f"cannot read {path} ({type(e).__name__}): the file is damaged; "
                              f"delete it or use the other checkpoint (last/best).") from None
    missing = {'model', 'model_type', 'model_args'} - set(ckpt)
    if missing:
        raise CheckpointError(f"{path} is not a loopgpt checkpoint (lacks {', '.join(sorted(missing))}): "
                              f"use a checkpoint written by this repo's train.py.")
    return ckpt


def model_from_checkpoint(ckpt):
    """The bare model a checkpoint holds, weights loaded."""
    model = build_model(ckpt['model_type'], ckpt['model_args'])
    state = {k.removeprefix('_orig_mod.').removeprefix('module.'): v for k, v in ckpt['model'].items()}
    model.load_state_dict(state)
    return model


# Dense (no sparsity) bf16/fp16 tensor-core peaks from NVIDIA's data sheets, in FLOP/s, by a
# piece of torch.cuda.get_device_name(); the first match wins, so the more specific come first.
GPU_PEAK_FLOPS = (('H100 PCIe', 756e12), ('H100 NVL', 835e12), ('H100', 989e12), ('H200', 989e12),
                  ('B200', 2250e12), ('A100', 312e12), ('L40S', 362e12), ('L40', 181e12), ('L4', 121e12),
                  ('A10', 125e12))


def peak_flops_of(device, dtype):
    """The peak FLOP/s that MFU divides by: a known CUDA GPU in bf16/fp16, else 0 (unknown:
    CPUs, MPS, fp32, other GPUs; pass peak_flops= to train.py or bench.py)."""
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
