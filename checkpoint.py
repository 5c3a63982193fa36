"""
Checkpoints: saving and loading them (train.py), and loading a trained model with its
tokenizer for inference (sample.py, eval.py). Device and precision defaults are in device.py.

A checkpoint is a dict saved with torch.save, with nanoGPT's keys plus a few:
    model          state_dict of the bare model (no DDP 'module.' or compile '_orig_mod.' prefixes)
    optimizer      optimizer state_dict             scaler   GradScaler state (fp16) or None
    model_type     'gpt' or 'loop'                  model_args  GPTConfig fields
    iter_num       iterations done                  best_val_loss
    config         the resolved training config     meta     the dataset's meta.json (tokenizer)
    rng            RNG states {'torch', 'cuda'}     tokens, time_s  tokens seen and training wall time so far
"""

import os
import shlex
import sys
import time

import torch

from dataformat import DataError, load_meta
from model import GPT, LoopGPT, build_model
from tokenizer import get_tokenizer


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


# -----------------------------------------------------------------------------
# a trained model for inference

HF_NAMES = ('gpt2', 'gpt2-medium', 'gpt2-large', 'gpt2-xl')


def load_model(init_from, out_dir, which='best', device='cpu', use=('sample from', 'sample.py')):
    """For inference (sample.py, eval.py): (model, meta, where), the model in eval mode on device,
    the dataset meta that names its tokenizer, and a description of where it came from.
    init_from: 'resume' (out_dir's which.pt, 'best' falling back to 'last') or GPT-2 weights (a
    Hugging Face name or a local save_pretrained directory). use: (what, script) for the command
    an out_dir without a checkpoint suggests."""
    if init_from != 'resume' and os.path.isfile(os.path.join(init_from, 'config.json')):
        return load_folder(init_from, device)
    if init_from != 'resume':
        try:
            model = GPT.from_pretrained(init_from, dict(dropout=0.0))
        except ImportError as e:
            raise CheckpointError(e) from None
        except Exception as e:  # OSError from the hub when offline, or a bad directory
            raise CheckpointError(
                f"cannot load GPT-2 weights {init_from!r} ({type(e).__name__}): Hugging Face downloads them "
                f"on first use, so run once with network access, or pass a local directory written by "
                f"save_pretrained.") from None
        return model.to(device).eval(), {'tokenizer': 'gpt2'}, f"Hugging Face {init_from}"
    path = checkpoint_file(out_dir, which)
    runs = runs_beside(out_dir, which) if path is None else []
    if runs:  # else load_checkpoint says how to train one
        raise CheckpointError(no_checkpoint_here(out_dir, which, runs, use))
    if path is not None and which == 'best' and os.path.basename(path) == 'last.pt':
        print(f"note: {out_dir} has no best.pt, using last.pt", file=sys.stderr)
        which = 'last'
    try:
        # to the CPU: the optimizer state (twice the weights) never needs the GPU; only the model goes there
        checkpoint = load_checkpoint(out_dir, which, 'cpu')
        model = model_from_checkpoint(checkpoint)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # unknown model_type, mismatched weights
        raise CheckpointError(f"{out_dir}/{which}.pt does not hold a model this model.py can build "
                              f"({type(e).__name__}): use it with the loopgpt version that trained it.") from None
    meta = checkpoint.get('meta') or checkpoint_data_meta(checkpoint, out_dir)
    where = f"{out_dir}/{which}.pt (iter {checkpoint.get('iter_num', '?')})"
    return model.to(device).eval(), meta, where


def load_folder(path, device):
    """A Hugging Face folder: one export.py wrote (a LoopGPT or GPT, with our tokenizer's name in
    its config.json), or any GPT-2 save_pretrained folder (GPT-2's tokenizer)."""
    from hf.convert import read_folder
    try:
        model, meta = read_folder(path)
    except ImportError as e:
        raise CheckpointError(e) from None
    except Exception as e:  # a folder of another architecture, or damaged files
        first = str(e).splitlines()[0] if str(e) else ''
        raise CheckpointError(f"cannot load {path} ({type(e).__name__}: {first}): use a folder export.py wrote "
                              f"or a GPT-2 save_pretrained folder.") from None
    return model.to(device).eval(), meta, f"Hugging Face folder {path}"


def checkpoint_file(out_dir, which):
    """The checkpoint to use in out_dir: which.pt, or last.pt where 'best' is asked for and
    the run has no best.pt; None if neither is there."""
    for name in [which] + ['last'] * (which == 'best'):
        path = os.path.join(out_dir, f'{name}.pt')
        if os.path.isfile(path):
            return path
    return None


def runs_beside(out_dir, which):
    """The checkpoints to use in the training runs beside out_dir (its sibling folders),
    newest first: [(path, iteration)]. The iteration comes from the checkpoint loaded with
    mmap, which reads its small pickle and leaves the weights (perhaps GBs) on disk; and
    weights_only, since these are files the user did not name."""
    parent = os.path.dirname(os.path.normpath(out_dir))
    try:
        names = sorted(os.listdir(parent or '.'))
    except OSError:
        return []
    paths = [p for p in (checkpoint_file(os.path.join(parent, name), which) for name in names) if p]
    runs = []
    for path in sorted(paths, key=os.path.getmtime, reverse=True):
        try:
            it = torch.load(path, map_location='cpu', mmap=True, weights_only=True).get('iter_num', '?')
        except Exception:  # damaged, or not a checkpoint of this repo
            it = '?'
        runs.append((path, it))
    return runs


def no_checkpoint_here(out_dir, which, runs, use, most=5):
    """The error for an out_dir without a checkpoint: the runs beside it that have one, and the
    command that uses the newest (never used silently: it may be another experiment)."""
    lines = [f"no checkpoint in {out_dir} ({'best.pt or last.pt' if which == 'best' else 'last.pt'}). "
             f"Training runs beside it that have one, newest first:"]
    for path, it in runs[:most]:
        when = time.strftime('%Y-%m-%d %H:%M', time.localtime(os.path.getmtime(path)))
        lines.append(f"  {path}  iter {it}, written {when}")
    if len(runs) > most:
        lines.append(f"  ... and {len(runs) - most} more")
    command = ['python', use[1], f'--out_dir={os.path.dirname(runs[0][0])}'] + ['--ckpt=last'] * (which == 'last')
    lines.append(f"To {use[0]} the newest: {shlex.join(command)}")
    return '\n'.join(lines)


def checkpoint_data_meta(checkpoint, out_dir):
    """Older checkpoints lack 'meta': read the meta.json of the dataset they were trained on."""
    config = checkpoint.get('config') or {}
    if 'dataset' not in config:
        raise CheckpointError(f"{out_dir} names no tokenizer (its checkpoint has neither meta nor dataset): "
                              f"retrain it with this repo's train.py.")
    try:
        return load_meta(os.path.join(config.get('data_dir', 'data'), config['dataset']))
    except DataError as e:
        raise CheckpointError(f"the checkpoint has no tokenizer info, and its dataset's: {e}") from None


def set_n_loop(model, n_loop):
    """Run a LoopGPT for n_loop iterations (None: as trained), test-time compute. Returns the
    trained count."""
    trained = model.config.n_loop
    if n_loop is not None:
        if not isinstance(model, LoopGPT):
            raise CheckpointError(f"n_loop={n_loop} needs a LoopGPT, but this model is a plain GPT, which does "
                                  f"not loop: drop --n_loop.")
        model.n_loop = n_loop
    return trained


def load_tokenizer(meta, model):
    """The tokenizer the checkpoint's meta names, checked against the model's vocabulary."""
    try:
        tok = get_tokenizer(meta.get('tokenizer'))
    except DataError as e:
        raise CheckpointError(e) from None
    if tok.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"the tokenizer {meta.get('tokenizer')!r} has {tok.vocab_size} tokens but the model "
                              f"only {model.config.vocab_size}: the checkpoint's meta names the wrong tokenizer.")
    return tok
