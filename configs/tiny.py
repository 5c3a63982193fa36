# A tiny LoopGPT that learns to write Python on a CPU: 2 shared blocks looped 3 times
# (effective depth 6, 0.43M parameters), byte-level (vocab 256), on this Python's
# standard library source. `make demo` trains it, then samples from it.
#   python prepare.py stdlib && python train.py configs/tiny.py
#   python sample.py --out_dir=out-tiny --start="def "
out_dir = 'out-tiny'
wandb_run_name = 'tiny'
dataset = 'stdlib'
device = 'cpu'
dtype = 'float32'
compile = False

n_layer = 2
n_loop = 3
n_head = 4
n_embd = 128
block_size = 256      # room for 256 new tokens in one window: the KV cache pays off (bench.py)
dropout = 0.0

batch_size = 8        # 8 x 256 = 2048 tokens per iteration
gradient_accumulation_steps = 1
learning_rate = 3e-3  # a model this small takes a high learning rate
max_iters = 1400
lr_decay_iters = 1400
min_lr = 3e-4
warmup_iters = 50
beta2 = 0.99          # small batches: average the squared gradients over more steps

eval_interval = 200
eval_iters = 20
log_interval = 50
