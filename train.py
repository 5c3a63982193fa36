"""
Train a GPT or a looped LoopGPT, in nanoGPT's style: read it top to bottom.

    python train.py configs/tiny.py                            # one process: CPU, a GPU or MPS
    python train.py configs/loop6.py --batch_size=8            # config files, then --key=value overrides
    torchrun --standalone --nproc_per_node=8 train.py configs/loop6.py    # DDP on one node

Data: data_dir/dataset/{train,val}.bin and meta.json, written by prepare.py.
Every training micro-batch is drawn from a generator seeded by (seed, iteration,
global micro-step), and DDP process r of W does micro-steps r*A/W .. (r+1)*A/W - 1 of
the A = gradient_accumulation_steps, so the global batch, the loss curve and a
resumed run are the same whatever the number of processes.

Under torchrun every rank reads its own data and (resuming) out_dir/last.pt; a problem that one
rank meets, on one node only say, stops every rank at once, and every node prints it, naming
the ranks (agree()).

On a dataset of examples with answers (prepare.py hops), windows hold whole examples,
the loss counts only the answers, and evaluations also report answer accuracy.

Writes in out_dir: last.pt (at every eval, the end included), best.pt (when the val
loss improves), log.jsonl (one JSON record per train log line and per eval;
started afresh by a new run, appended to by a resumed one).
"""

import json
import math
import os
import sys
import textwrap
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from configurator import ConfigError, answer_help, config_keys, configure
from dataformat import DataError, answer_groups, answer_hits, load_meta
from device import (DTYPES, autocast_context, default_device, default_dtype, device_defaults, device_type_of,
                    peak_flops_of)
from model import GPT, Block, build_model

answer_help(__file__, sys.argv[1:])  # --help: the docstring and the keys below, before they are computed

# -----------------------------------------------------------------------------
# default config: GPT-2 124M on OpenWebText, as nanoGPT. Change it in configs/*.py or with --key=value;
# an unknown key or a value of the wrong type stops the run at once, naming the closest keys.
# I/O
out_dir = 'out'          # checkpoints (last.pt, best.pt) and log.jsonl go here
eval_interval = 2000     # evaluate, log and save last.pt every this many iterations, and at the end
log_interval = 1         # print and log a training line every this many iterations
eval_iters = 200         # batches per split in each evaluation (the same batches every time)
eval_only = False        # evaluate once (e.g. a resumed checkpoint or GPT-2) and exit, writing nothing
init_from = 'scratch'    # 'scratch', 'resume' (out_dir/last.pt), or GPT-2 weights: 'gpt2', 'gpt2-medium', ... or a local HF directory
# wandb logging
wandb_log = False        # off by default; wandb is imported only when on (pip install wandb)
wandb_project = 'loopgpt'
wandb_run_name = 'gpt2'
# data
dataset = 'openwebtext'  # a folder under data_dir written by prepare.py
data_dir = 'data'        # data read from data_dir/dataset/
gradient_accumulation_steps = 5 * 8  # micro-batches per iteration in all, shared out among the DDP processes
batch_size = 12          # sequences per micro-batch
block_size = 1024        # context length
# model
model_type = 'auto'      # 'gpt', 'loop', or 'auto': 'loop' if n_loop > 1 or any other loop setting is on
n_layer = 12             # blocks (for a LoopGPT: the shared blocks of the loop)
n_head = 12
n_embd = 768
dropout = 0.0            # 0 for pretraining, 0.1+ for finetuning; a resume may change it
bias = True              # biases in Linear and LayerNorm, as GPT-2
n_loop = 1               # LoopGPT: times the n_layer shared blocks are applied
n_prelude = 0            # LoopGPT: unshared blocks before the loop
n_coda = 0               # LoopGPT: unshared blocks after the loop
learn_gates = True       # LoopGPT: False freezes the gates at 1 (an ablation)
input_injection = False  # LoopGPT: feed the input x_0 into every iteration (model.py: LoopGPT.loop)
loop_norm = False        # LoopGPT: a LayerNorm on the state after every iteration (model.py: LoopGPT.loop)
# LoopGPT recurrent-depth training: off by default; a resume may change these two
loop_sampling = 'fixed'  # 'fixed': n_loop iterations; 'poisson': drawn per iteration, mean n_loop (LoopGPT.draw_n_loop)
bptt_loops = 0           # backprop through the last k iterations only; 0: through all
# AdamW optimizer
learning_rate = 6e-4     # peak learning rate
max_iters = 600000       # iterations to train
weight_decay = 1e-1      # on weight matrices only (model.py: GPT.configure_optimizers)
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0          # clip gradients at this norm; 0 disables
# learning rate: linear warmup, then cosine decay to min_lr
decay_lr = True          # False: learning_rate throughout
warmup_iters = 2000
lr_decay_iters = 600000  # the cosine reaches min_lr here; ~= max_iters, per Chinchilla
min_lr = 6e-5            # ~= learning_rate / 10, per Chinchilla
# system: device, dtype and compile follow the machine unless set
device = default_device()          # 'cpu', 'cuda', 'cuda:1', 'mps'
dtype = default_dtype(device)      # 'float32', 'bfloat16' or 'float16' (autocast; float16 adds a GradScaler)
compile = device_type_of(device) == 'cuda'  # torch.compile: faster on GPUs, slow to start
peak_flops = 0.0         # peak FLOP/s of one device, for MFU; 0: known CUDA GPUs in bf16/fp16, else no MFU
seed = 1337              # model init, data order, dropout, drawn loop counts
# -----------------------------------------------------------------------------

ARCHITECTURE = ('model_type', 'block_size', 'n_layer', 'n_head', 'n_embd', 'bias',
                'n_loop', 'n_prelude', 'n_coda', 'learn_gates', 'input_injection', 'loop_norm')
LOOP_SETTINGS = {'n_prelude': 0, 'n_coda': 0, 'input_injection': False, 'loop_norm': False, 'loop_sampling': 'fixed',
                 'bptt_loops': 0}


def die(message):
    """A mistake the user can fix: one line on stderr, exit 1, no traceback. Under torchrun the
    line names the rank, since the problem may be one node's own (its data, its copy of a
    checkpoint). Before the processes connect, each node prints it once; after, die joins
    agree(), so that every rank stops with this one and every node prints its line."""
    if dist.is_initialized():
        agree(str(message))  # exits
    if int(os.environ.get('LOCAL_RANK', 0)) == 0:
        where = f"[rank {os.environ['RANK']}] " if 'RANK' in os.environ else ''
        print(f"{where}error: {message}", file=sys.stderr)
    sys.exit(1)


def agree(problem=None):
    """DDP: every rank calls this at the same points (the end of set-up, after each evaluation)
    with what went wrong on it, or None. If anything did, every node prints each problem once
    with the ranks that met it, and all ranks exit 1 together. Without it a rank that stops
    alone leaves the others waiting in their next collective until the NCCL timeout (10
    minutes), and its message stays on its own node."""
    problems = [None] * world_size
    dist.all_gather_object(problems, problem)
    if not any(problems):
        return
    if local_rank == 0:
        for message in dict.fromkeys(p for p in problems if p):  # each distinct one, in rank order
            print(f"[{rank_names([r for r, p in enumerate(problems) if p == message])}] error: {message}",
                  file=sys.stderr)
    dist.destroy_process_group()
    sys.exit(1)


def rank_names(ranks):
    """[3] -> 'rank 3', [8, 9, .., 15] -> 'ranks 8-15', [0, 3] -> 'ranks 0, 3'."""
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    if ranks == list(range(ranks[0], ranks[-1] + 1)):
        return f"ranks {ranks[0]}-{ranks[-1]}"
    return 'ranks ' + ', '.join(map(str, ranks))


def check_device(device):
    kind = device_type_of(device)
    if kind == 'cuda' and not torch.cuda.is_available():
        die(f"device '{device}' needs a CUDA GPU but torch sees none: use --device=cpu (or mps on a Mac).")
    if kind == 'mps' and not torch.backends.mps.is_available():
        die("device 'mps' is not available here: use --device=cpu.")


def check_config(c, world_size):
    """Values of the right type can still be wrong: return what to fix, or None."""
    positive = ('batch_size', 'block_size', 'gradient_accumulation_steps', 'n_layer', 'n_head',
                'n_embd', 'n_loop', 'eval_interval', 'log_interval', 'eval_iters')
    for key in positive:
        if c[key] < 1:
            return f"{key} must be at least 1, not {c[key]}."
    for key in ('n_prelude', 'n_coda', 'max_iters', 'seed', 'warmup_iters', 'bptt_loops', 'peak_flops'):
        if c[key] < 0:
            return f"{key} must not be negative, not {c[key]}."
    if c['n_embd'] % c['n_head']:
        return f"n_embd={c['n_embd']} is not divisible by n_head={c['n_head']}: choose values that divide."
    if c['dtype'] not in DTYPES:
        return f"unknown dtype '{c['dtype']}': use one of {', '.join(DTYPES)}."
    if c['model_type'] not in ('auto', 'gpt', 'loop'):
        return f"unknown model_type '{c['model_type']}': use 'auto', 'gpt' or 'loop'."
    if c['loop_sampling'] not in ('fixed', 'poisson'):
        return f"unknown loop_sampling '{c['loop_sampling']}': use 'fixed' or 'poisson'."
    if c['loop_sampling'] != 'fixed' and c['n_loop'] < 2:
        return f"loop_sampling='{c['loop_sampling']}' draws loop counts with mean n_loop: set n_loop to 2 or more."
    changed = [k for k, v in LOOP_SETTINGS.items() if c[k] != v]
    if c['model_type'] == 'gpt' and (c['n_loop'] != 1 or changed):
        return (f"model_type='gpt' does not loop: set model_type='loop' (or 'auto') to use "
                f"{', '.join(['n_loop'] * (c['n_loop'] != 1) + changed)}.")
    if c['gradient_accumulation_steps'] % world_size:
        return (f"gradient_accumulation_steps={c['gradient_accumulation_steps']} is not divisible by the "
                f"{world_size} processes: make it a multiple of the number of processes.")
    return None


# --- configuration: defaults above, then config files, then --key=value ---
try:  # dtype and compile follow the chosen device unless they are set too
    config = configure(config_keys(globals()), sys.argv[1:], derived=device_defaults)
except ConfigError as e:
    die(e)
check_device(config['device'])
problem = check_config(config, int(os.environ.get('WORLD_SIZE', 1)))
if problem:
    die(problem)
if config['model_type'] == 'auto':
    loops = config['n_loop'] > 1 or any(config[k] != v for k, v in LOOP_SETTINGS.items())
    config['model_type'] = 'loop' if loops else 'gpt'
globals().update(config)

# --- DDP: one process per GPU (or CPU slot), launched by torchrun ---
ddp = 'RANK' in os.environ
if ddp:
    rank, local_rank, world_size = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
    if device_type_of(device) == 'cuda':
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
    dist.init_process_group(backend='nccl' if device_type_of(device) == 'cuda' else 'gloo')
    # from here every rank reads its own data and checkpoint, and a problem on one rank (die) waits in
    # agree() for the others, which meet it at the end of set-up: the first collective
else:
    rank, local_rank, world_size = 0, 0, 1
master_process = rank == 0  # logs, evaluates and saves
device_type = device_type_of(device)
micro_steps = gradient_accumulation_steps // world_size  # micro-batches this process runs per iteration
tokens_per_iter = gradient_accumulation_steps * batch_size * block_size
if master_process:
    print("config:", textwrap.fill(', '.join(f'{k}={v!r}' for k, v in config.items()), 100,
                                   subsequent_indent='  '))
    print(f"tokens per iteration: {tokens_per_iter:,} = {gradient_accumulation_steps} micro-batches "
          f"({micro_steps} in each of {world_size} processes) x {batch_size} x {block_size}")
torch.manual_seed(seed)  # the model init
if device_type == 'cuda':
    torch.set_float32_matmul_precision('high')  # allow TF32 matmuls
ctx = autocast_context(device, dtype)

# --- data ---
data_path = os.path.join(data_dir, dataset)
try:
    meta = load_meta(data_path)  # checks that train.bin and val.bin are complete
except DataError as e:
    die(e)
if not {'tokenizer', 'vocab_size'} <= set(meta):
    die(f"{data_path}/meta.json lacks tokenizer or vocab_size: prepare {dataset} again with prepare.py.")
data_dtype = np.dtype(meta['dtype'])
for split in ('train', 'val'):
    n_tokens = os.path.getsize(os.path.join(data_path, f'{split}.bin')) // data_dtype.itemsize
    if n_tokens <= block_size:
        die(f"{data_path}/{split}.bin holds {n_tokens} tokens, not more than block_size={block_size}: "
            f"lower block_size or prepare more data.")
# GPT-2's 50257 tokens padded up to a multiple of 64 (50304): faster matmuls, the extra rows never used
vocab_size = meta['vocab_size'] if meta['tokenizer'] != 'gpt2' else -(-meta['vocab_size'] // 64) * 64
# a dataset of examples with answers (hops): the answer group of each target position, -1 = no loss
try:
    groups, group_names = answer_groups(meta, block_size)  # (block_size,) int64, names; or None, None
except DataError as e:
    die(e)
example_len = meta['answers']['example_len'] if groups is not None else 1


def get_batch(split, rng):
    """batch_size windows of split at offsets drawn from the numpy Generator rng:
    inputs x and targets y, the same tokens shifted by one, both (batch_size, block_size) int64.
    On a dataset with answers the windows start on example boundaries and y is -1 (no loss)
    wherever its token is not an answer."""
    # a new memmap every batch: keeping one open leaks memory (nanoGPT)
    data = np.memmap(os.path.join(data_path, f'{split}.bin'), dtype=data_dtype, mode='r')
    if groups is None:
        ix = rng.integers(len(data) - block_size, size=batch_size)
    else:
        ix = rng.integers((len(data) - block_size - 1) // example_len + 1, size=batch_size) * example_len
    x = torch.from_numpy(np.stack([data[i:i + block_size] for i in ix]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[i + 1:i + 1 + block_size] for i in ix]).astype(np.int64))
    if groups is not None:
        y[:, groups < 0] = -1
    if device_type == 'cuda':  # pinned memory lets the copy run asynchronously
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


def train_rng(it, micro_step):
    """The generator of one training micro-batch (and its dropout masks): it depends on the
    seed, the iteration and the global micro-step only, not on the world size or on resumes."""
    return np.random.default_rng([seed, 0, it, micro_step])


def loop_rng(it):
    """The generator of iteration it's loop count (loop_sampling): the same in every process
    and in a resumed run."""
    return np.random.default_rng([seed, 2, it])


def eval_rng(split, k):
    """The generator of eval batch k of split: the same batches at every eval."""
    return np.random.default_rng([seed, 1, ('train', 'val').index(split), k])


# --- model ---
model_args = dict(block_size=block_size, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                  n_embd=n_embd, dropout=dropout, bias=bias, n_loop=n_loop, n_prelude=n_prelude,
                  n_coda=n_coda, learn_gates=learn_gates, input_injection=input_injection, loop_norm=loop_norm,
                  loop_sampling=loop_sampling, bptt_loops=bptt_loops)
TRAINING_ARGS = ('dropout', 'loop_sampling', 'bptt_loops')  # model_args a resumed run may change
iter_num, best_val_loss, tokens_seen, flops_seen, time_before = 0, float('inf'), 0, 0, 0.0
ckpt = None
if init_from == 'scratch':
    raw_model = build_model(model_type, model_args)
elif init_from == 'resume':
    path = os.path.join(out_dir, 'last.pt')
    try:
        ckpt = load_checkpoint(out_dir, 'last', device)
    except CheckpointError as e:
        if world_size > int(os.environ.get('LOCAL_WORLD_SIZE', world_size)) and not os.path.exists(path):
            # several nodes: every rank reads last.pt, but only rank 0 wrote it, on its own node
            e = (f"no checkpoint at {path} on this node: every rank resumes from it, and only rank 0 writes "
                 f"it; put out_dir on a filesystem all nodes share or copy it to each node (or, if there is "
                 f"none yet, train one first).")
        die(e)
    # the data must use the tokenizer the checkpoint was trained on
    old_meta = ckpt.get('meta') or {}
    if (old_meta.get('tokenizer'), old_meta.get('vocab_size')) != (meta['tokenizer'], meta['vocab_size']):
        die(f"{path} was trained on {old_meta.get('tokenizer')} tokens (vocab {old_meta.get('vocab_size')}) "
            f"but {data_path} holds {meta['tokenizer']} tokens (vocab {meta['vocab_size']}): "
            f"resume on a dataset with the checkpoint's tokenizer.")
    # and the config must describe the model the checkpoint was trained with (dropout may change)
    # (checkpoints from before input_injection and loop_norm existed were trained without them)
    old = {'input_injection': False, 'loop_norm': False, **ckpt['model_args'], 'model_type': ckpt['model_type'],
           **(ckpt.get('config') or {})}
    diff = [k for k in ARCHITECTURE if old.get(k) != config[k]]
    if diff:
        die(f"{path} was trained with {', '.join(f'{k}={old.get(k)!r}' for k in diff)} but the config gives "
            f"{', '.join(f'{k}={config[k]!r}' for k in diff)}: resume with the config it was trained with "
            f"(saved in the checkpoint) or use a new out_dir.")
    model_args = {**ckpt['model_args'], **{k: model_args[k] for k in TRAINING_ARGS}}
    ckpt['model_args'] = model_args
    raw_model = model_from_checkpoint(ckpt)
    iter_num, best_val_loss = ckpt['iter_num'], ckpt['best_val_loss']
    tokens_seen, time_before = ckpt.get('tokens', iter_num * tokens_per_iter), ckpt.get('time_s', 0.0)
    flops_seen = ckpt.get('flops', raw_model.flops_per_token() * tokens_seen)
else:  # GPT-2 weights from Hugging Face (a hub name or a local save_pretrained directory)
    if model_type != 'gpt':
        die(f"init_from={init_from!r} loads a plain GPT-2: leave n_loop=1 and the other loop settings at their "
            f"defaults.")
    if meta['tokenizer'] != 'gpt2':
        die(f"init_from={init_from!r} needs GPT-2 tokens but {data_path} holds {meta['tokenizer']} tokens: "
            f"prepare the dataset with the gpt2 tokenizer.")
    try:
        raw_model = GPT.from_pretrained(init_from, dict(dropout=dropout))
    except ImportError as e:
        die(e)
    except Exception as e:
        die(f"cannot load GPT-2 weights {init_from!r} ({type(e).__name__}): use 'gpt2', 'gpt2-medium', "
            f"'gpt2-large', 'gpt2-xl' (needs the Hugging Face hub) or a local save_pretrained directory.")
    if block_size < raw_model.config.block_size:
        raw_model.crop_block_size(block_size)
    c = raw_model.config
    model_args = {k: getattr(c, k) for k in model_args}
raw_model.to(device)
if master_process:
    print(f"model: {type(raw_model).__name__}, {raw_model.get_num_params() / 1e6:.2f}M parameters, "
          f"effective depth {raw_model.depth()}")
    # a warning rather than a trial step at the cap: before the first step there is no AdamW state yet,
    # and hours of allocator fragmentation are still to come, so a trial that fits would prove little
    if loop_sampling != 'fixed' and not bptt_loops:
        cap = 4 * n_loop  # LoopGPT.draw_n_loop's cap
        print(f"note: with bptt_loops=0 a step backpropagates through every drawn iteration: a rare draw at the "
              f"cap, {cap} loops, keeps 4x the loop activations of a step at n_loop={n_loop}, and may run out of "
              f"memory hours into the run. bptt_loops=k bounds it (memory grows with k, not with the draw); "
              f"python -m tools.bench CONFIG --batch_size={batch_size} --loop_counts={n_loop},{cap} measures both peaks.")

# --- optimizer and fp16 gradient scaler ---
optimizer = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type)
scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
if ckpt is not None:
    optimizer.load_state_dict(ckpt['optimizer'])
    if scaler.is_enabled() and ckpt.get('scaler'):
        scaler.load_state_dict(ckpt['scaler'])
    if ckpt.get('rng'):  # training reseeds per micro-step; this covers any other use of the RNG
        torch.set_rng_state(ckpt['rng']['torch'].cpu())
        if device_type == 'cuda' and ckpt['rng'].get('cuda') is not None:
            torch.cuda.set_rng_state(ckpt['rng']['cuda'].cpu())
ckpt = None  # free the memory

model = raw_model
if compile:
    if master_process:
        print("compiling the model... (takes a minute)")
    if loop_sampling == 'fixed':
        model = torch.compile(raw_model)
    else:  # each drawn loop count would be a new graph of the whole model: compile the blocks instead
        for module in raw_model.modules():
            if isinstance(module, Block):
                module.compile()
    if master_process and ddp and dropout > 0:  # docs/training.md, "Several GPUs"
        print("note: under DDP, compile=True splits the compiled graph at DDP's gradient buckets and each piece "
              "draws its own dropout seeds: on CUDA the dropout masks, and so the losses, then depend on the "
              "number of processes (alike in distribution, not equal). compile=False or dropout=0 gives the "
              "losses of one process.")
if master_process and wandb_log:
    try:
        import wandb
    except ImportError:
        die("wandb_log=True needs wandb: pip install wandb, or set wandb_log=False.")

# --- DDP: every rank is ready, or all stop here, before DDP's constructor broadcasts the weights ---
if ddp:
    agree()  # meets the die() of any rank that met a problem above
    if init_from == 'resume':  # each rank read its own out_dir/last.pt: the copies must be one checkpoint
        iters = [None] * world_size
        dist.all_gather_object(iters, iter_num)
        if len(set(iters)) > 1:
            read = ', '.join(f"{rank_names([r for r, i in enumerate(iters) if i == it])} at iter {it}"
                             for it in dict.fromkeys(iters))
            die(f"the ranks resumed from different checkpoints ({read}): the nodes hold different copies of "
                f"out_dir; put out_dir on a filesystem all nodes share, or copy rank 0's to each node again.")
# with bptt_loops, parameters used only before the last k iterations (wpe, a_0, the prelude)
# get no gradient in some steps: DDP must look for them
# gradient_as_bucket_view: the gradients live in DDP's all-reduce buckets, not in a copy beside them
train_model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None,
                  find_unused_parameters=bptt_loops > 0, gradient_as_bucket_view=True) if ddp else model
peak_flops = peak_flops or peak_flops_of(device, dtype)  # 0: unknown (CPU, MPS, fp32, an unlisted GPU)


@torch.no_grad()
def estimate_loss():
    """Mean loss over eval_iters fixed batches of each split. On a dataset with answers,
    also the answer accuracy (the most likely token is the answer): '{split}_acc' overall
    and 'val_acc_by' per answer group."""
    out = {}
    model.eval()
    for split in ('train', 'val'):
        losses = torch.zeros(eval_iters)
        hits = answers = 0  # correct and total answers per group
        for k in range(eval_iters):
            x, y = get_batch(split, eval_rng(split, k))
            with ctx:
                logits, loss = model(x, y)
            losses[k] = loss.item()
            if groups is not None:
                h, n = answer_hits(logits.argmax(dim=-1).cpu().numpy(), y.cpu().numpy(), groups)
                hits, answers = hits + h, answers + n
        out[split] = losses.mean().item()
        if groups is not None:
            out[f'{split}_acc'] = float(hits.sum() / answers.sum())
            if split == 'val':
                out['val_acc_by'] = dict(zip(group_names, (hits / answers).tolist()))
    model.train()
    return out


def get_lr(it):
    """Linear warmup for warmup_iters, cosine decay to min_lr until lr_decay_iters, then min_lr."""
    if not decay_lr:
        return learning_rate
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it >= lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def log(record):
    """Append one record to out_dir/log.jsonl (and send it to wandb)."""
    with open(os.path.join(out_dir, 'log.jsonl'), 'a') as f:
        f.write(json.dumps(record) + '\n')
    if wandb_log:
        values = {k: v for k, v in record.items() if k not in ('kind', 'iter', 'gates', 'val_acc_by') and v is not None}
        values.update({f'gate_{n}': g for n, g in enumerate(record.get('gates', []))})
        values.update({f'val_acc {name}': a for name, a in record.get('val_acc_by', {}).items()})
        wandb.log({f"{record['kind']}/{k}": v for k, v in values.items()}, step=record['iter'])


def save(name):
    """Write out_dir/name atomically with everything an exact resume needs."""
    path = os.path.join(out_dir, name)
    ckpt = {
        'model': raw_model.state_dict(),  # the bare model: no 'module.' or '_orig_mod.' prefixes
        'optimizer': optimizer.state_dict(),
        'scaler': scaler.state_dict() if scaler.is_enabled() else None,
        'model_type': model_type,
        'model_args': model_args,
        'iter_num': iter_num,
        'best_val_loss': best_val_loss,
        'config': config,
        'meta': meta,
        'rng': {'torch': torch.get_rng_state(),
                'cuda': torch.cuda.get_rng_state() if device_type == 'cuda' else None},
        'tokens': tokens_seen,
        'flops': flops_seen,
        'time_s': time_s,
    }
    try:
        save_checkpoint(ckpt, path)
    except OSError as e:
        die(f"cannot write {path} ({e.strerror or e}): free some disk space or set another out_dir "
            f"(the previous checkpoint is intact).")


def trim_log(upto):
    """A new run starts a new log.jsonl; a resumed one keeps the records up to its checkpoint
    but drops those a crash after the checkpoint left behind: they are about to be redone."""
    path = os.path.join(out_dir, 'log.jsonl')
    keep = []
    if upto > 0 and os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by the crash
                    continue
                if r['iter'] < upto or (r['kind'] == 'eval' and r['iter'] == upto):
                    keep.append(line)
    with open(path + '.tmp', 'w') as f:
        f.writelines(keep)
    os.replace(path + '.tmp', path)


if master_process:
    os.makedirs(out_dir, exist_ok=True)
    if not eval_only:
        trim_log(iter_num if init_from == 'resume' else 0)
    if wandb_log:
        wandb.init(project=wandb_project, name=wandb_run_name, config=config)

def duration(seconds):
    """3725 -> '1h02m', 125 -> '2m05s', 7 -> '7s'."""
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s" if m else f"{s}s"


# --- training loop ---
resumed_at = iter_num if init_from == 'resume' else None  # that eval is in the checkpoint already
start_iter = iter_num
saved_at = resumed_at  # iteration of the last checkpoint written
t_start = time.time()
time_s = time_before
if master_process and iter_num >= max_iters and not eval_only:
    print(f"nothing to do: {out_dir}/last.pt is at iter {iter_num} and max_iters={max_iters}.")
while True:
    # evaluate both splits, log, and save last.pt (and best.pt when val improves): rank 0 only
    time_s = time_before + time.time() - t_start
    due = (iter_num % eval_interval == 0 or iter_num == max_iters) and iter_num != resumed_at
    if master_process and (due or eval_only):
        losses = estimate_loss()
        acc = f", val acc {losses['val_acc']:.3f} (" + ', '.join(
            f'{name} {a:.3f}' for name, a in losses['val_acc_by'].items()) + ')' if groups is not None else ''
        print(f"eval at iter {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}{acc}")
        if eval_only:
            break
        if not (math.isfinite(losses['train']) and math.isfinite(losses['val'])):
            die(f"the eval loss is {losses['train']} (train), {losses['val']} (val) at iter {iter_num}: "
                f"training stopped without saving, "
                f"{out_dir}/last.pt (iter {saved_at}) is the last good checkpoint; lower learning_rate.")
        log({'kind': 'eval', 'iter': iter_num, 'tokens': tokens_seen, 'flops': flops_seen, 'time_s': time_s,
             'train_loss': losses['train'], 'val_loss': losses['val'],
             **({k: losses[k] for k in ('train_acc', 'val_acc', 'val_acc_by')} if groups is not None else {})})
        improved = losses['val'] < best_val_loss
        best_val_loss = min(best_val_loss, losses['val'])
        save('last.pt')
        if improved:
            save('best.pt')
        saved_at = iter_num
    if ddp and due and not eval_only:
        agree()  # rank 0's evaluation and saves went well, or (die) every rank stops with it
    if eval_only or iter_num >= max_iters:
        break

    # one optimizer step on the global batch of gradient_accumulation_steps micro-batches,
    # with the iteration's loop count: n_loop, or drawn from (seed, iteration) by every process alike
    t0 = time.time()
    lr = get_lr(iter_num)
    loops = raw_model.draw_n_loop(loop_rng(iter_num)) if loop_sampling != 'fixed' else n_loop
    for group in optimizer.param_groups:
        group['lr'] = lr
    loss_sum = torch.zeros((), device=device)
    for k in range(micro_steps):
        rng = train_rng(iter_num, rank * micro_steps + k)  # this process's share of the global micro-steps
        x, y = get_batch('train', rng)
        torch.manual_seed(int(rng.integers(2**62)))  # dropout masks
        # DDP averages the gradients across processes in backward: only after the last micro-step
        sync = nullcontext() if not ddp or k == micro_steps - 1 else train_model.no_sync()
        with sync:
            with ctx:
                _, loss = train_model(x, y, n_loop=loops if loop_sampling != 'fixed' else None)
            loss_sum += loss.detach()
            scaler.scale(loss / micro_steps).backward()  # the mean over micro-steps, as in one big batch
    if ddp:
        dist.all_reduce(loss_sum)  # sum over the processes (gloo has no AVG)
    # the mean loss of the global batch; .item() waits for the GPU, once per iteration
    loss = loss_sum.item() / gradient_accumulation_steps
    if not math.isfinite(loss):
        die(f"the training loss is {loss} at iter {iter_num}: training stopped without saving, "
            f"{out_dir}/last.pt (iter {saved_at}) is the last good checkpoint; lower learning_rate "
            f"(or use dtype=bfloat16 or float32) and resume with --init_from=resume.")
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(raw_model.parameters(), grad_clip)
    scaler.step(optimizer)  # skipped if fp16 gradients overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    dt = time.time() - t0
    it = iter_num
    iter_num += 1
    tokens_seen += tokens_per_iter
    flops_per_token = raw_model.flops_per_token(n_loop=loops)  # the iterations actually run
    flops_seen += flops_per_token * tokens_per_iter

    if master_process and it % log_interval == 0:
        # achieved model FLOP/s of one process (one GPU), and MFU where the device's peak is known
        flops_per_s = flops_per_token * tokens_per_iter / world_size / dt
        mfu = flops_per_s / peak_flops if peak_flops else None
        record = {'kind': 'train', 'iter': it, 'loss': loss, 'lr': lr, 'dt_ms': dt * 1000,
                  'tokens': tokens_seen, 'tok_s': tokens_per_iter / dt, 'tflops': flops_per_s / 1e12, 'mfu': mfu}
        if device_type == 'cuda':
            record['peak_mem_gb'] = torch.cuda.max_memory_allocated(device) / 1e9
        if hasattr(raw_model, 'gate_means'):
            record['n_loop'] = loops
            record['gates'] = raw_model.gate_means()
        speed = f"mfu {mfu * 100:.1f}%" if mfu is not None else f"{flops_per_s / 1e12:.3g} TFLOP/s"
        loop = f", n_loop {loops}" if loop_sampling != 'fixed' else ''
        gates = ' gates ' + ' '.join(f'{g:.2f}' for g in record['gates']) if 'gates' in record else ''
        # time left: this run's pace so far (evaluations included) over the iterations still to do;
        # none on the first step, whose time is mostly the first evaluation and warm-up
        eta = (time.time() - t_start) / (iter_num - start_iter) * (max_iters - iter_num)
        eta = f", eta {duration(eta)}" if it > start_iter else ''
        print(f"iter {it}: loss {loss:.4f}, lr {lr:.2e}, {dt * 1000:.0f} ms, {tokens_per_iter / dt:,.0f} tok/s, "
              f"{speed}{loop}{eta}{gates}")
        log(record)

# with eval_only, wait for rank 0's evaluation (a training run's last one was met in agree()); leave together
if ddp:
    dist.barrier(device_ids=[local_rank] if device_type == 'cuda' else None)
    dist.destroy_process_group()
