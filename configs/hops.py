# Multi-hop pointer chasing (prepare.py hops): one block looped twice, 55k parameters,
# following 1 to 4 hops through a random cycle of 8 nodes; about 3.5 CPU minutes. It
# learns 1 hop, 2 hops on some seeds only (val accuracy 0.57 with this seed, 0.996 with
# seed 1338; add --loop_sampling=poisson for 0.97 on both), 3 and 4 hops only partly:
# see results/README.md, study 1. python -m experiments.hops trains it next to its twins,
# with the same settings as here.
#   python prepare.py hops && python train.py configs/hops.py
#   python sample.py --out_dir=out-hops --start="1>2 6>5 4>7 2>3 3>6 0>4 7>1 5>0 2h 1" \
#       --max_new_tokens=1 --temperature=0 --num_samples=1    # 2 hops from 1: 1>2>3, so "3"
out_dir = 'out-hops'
wandb_run_name = 'hops'
dataset = 'hops'
device = 'cpu'
dtype = 'float32'
compile = False

n_layer = 1
n_loop = 2
n_head = 4
n_embd = 64
block_size = 32       # one example: 8 edges + 8 queries of (hop count, start, answer)
dropout = 0.0

batch_size = 64
gradient_accumulation_steps = 1
learning_rate = 3e-3
max_iters = 5000
lr_decay_iters = 5000
min_lr = 3e-4
warmup_iters = 100

eval_interval = 500
eval_iters = 8
log_interval = 100
