# 1-layer GPT without loops: the non-loop twin of the paper's 45M loop model.
# Paper (arXiv 2409.14199): validation loss 3.98.   Non-embedding params: 45.7M
# Same recipe as configs/gpt2.py (nanoGPT's GPT-2 124M run, ~0.5M tokens per step).
# Launch: torchrun --standalone --nproc_per_node=8 train.py configs/gpt1.py
out_dir = 'out-gpt1'
wandb_run_name = 'gpt1'

dataset = 'openwebtext'
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8

n_layer = 1
n_head = 12
n_embd = 768
n_loop = 1
dropout = 0.0
bias = True

learning_rate = 6e-4
max_iters = 600000
lr_decay_iters = 600000
min_lr = 6e-5
warmup_iters = 2000
weight_decay = 1e-1

eval_interval = 1000
eval_iters = 200
log_interval = 10
