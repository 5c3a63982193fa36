# GPT-2 124M on OpenWebText: the paper's 12-layer baseline.
# Paper (arXiv 2409.14199): validation loss 3.12.   Non-embedding params: 123.7M
# Training recipe: nanoGPT's GPT-2 124M run, ~0.5M tokens per step:
# 12 batch * 1024 block * 40 accumulation steps = 491,520 tokens.
# Launch: torchrun --standalone --nproc_per_node=8 train.py configs/gpt2.py
out_dir = 'out-gpt2'
wandb_run_name = 'gpt2'

dataset = 'openwebtext'
batch_size = 12
block_size = 1024
gradient_accumulation_steps = 5 * 8

n_layer = 12
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
