# A tiny LoopGPT that learns to write Python on a CPU in about 3 minutes: one block
# looped twice (the shape of the paper's 1-layer loop model, configs/loop1.py, at 0.23M
# parameters), byte-level (vocab 256), on this Python's standard library source.
# `make demo` trains it, then samples from it.
#   python prepare.py stdlib && python train.py configs/tiny.py
#   python sample.py --out_dir=out-tiny --start="def "
# Tuned for what you see in a few CPU minutes: a small, shallow model fed many tokens
# (7.4M) learns faster per second than a deeper or wider one fed fewer (results/README.md).
out_dir = 'out-tiny'
wandb_run_name = 'tiny'
dataset = 'stdlib'
device = 'cpu'
dtype = 'float32'
compile = False

n_layer = 1
n_loop = 2
n_head = 4
n_embd = 128
block_size = 128
dropout = 0.0

batch_size = 32       # 32 x 128 = 4096 tokens per iteration
gradient_accumulation_steps = 1
learning_rate = 3e-3  # a model this small takes a high learning rate
max_iters = 1800
lr_decay_iters = 1800
min_lr = 3e-4
warmup_iters = 50
beta2 = 0.99          # small batches: average the squared gradients over more steps

eval_interval = 450
eval_iters = 20
log_interval = 50
