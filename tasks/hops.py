"""
The hops task: multi-hop pointer chasing, a task that needs depth. `python prepare.py hops`
writes it (the same bytes every time); train.py and experiments/ train and score it.

One example, K nodes and Q queries (the defaults: K = 8, H = 4 hop counts, Q = 8), is
K + 3Q = 32 tokens. The first training example, decoded:

    5>2 6>7 3>5 7>1 4>0 0>3 1>4 2>6   1h 6 7   2h 1 0   3h 0 2   4h 5 1   1h 2 6 ...
    '---------- the K edges -------'   '---------- Q queries "h a answer" ----------'

The edges x>y (one token each, in random order) are a random cycle π through all K nodes:
0>3>5>2>6>7>1>4>0. Query j asks for h_j = 1 + (j mod H) hops from a start node a_j (all
different): "3h 0 2" is 0 -> 3 -> 5 -> 2. The loss and the accuracy count the answers only
(meta.json's "answers": where in an example the answers are, by hop count).

Why h hops need depth: on a cycle, h < K hops land h places further round, never back on a,
so the answer cannot be guessed from the question. Each hop is a lookup (find the edge
whose source is the current node) that needs the result of the one before, so a model
needs about h sequential steps, i.e. layers or loop iterations, for h hops. Train and val
use disjoint cycles, so a model cannot pass by remembering cycles.
"""

import numpy as np

from dataformat import SPLITS, DataError


def check_settings(nodes, hops, queries, train_examples, val_examples):
    """DataError if these settings cannot make a dataset."""
    for key, value, low in (("nodes", nodes, 2), ("hops", hops, 1), ("queries", queries, 1),
                            ("train_examples", train_examples, 1), ("val_examples", val_examples, 1)):
        if value < low:
            raise DataError(f"--{key} must be at least {low}, got {value}")
    if hops >= nodes:
        raise DataError(f"--hops {hops} would go round the cycle of {nodes} nodes back to the "
                        f"start: use --hops below --nodes")
    if nodes * nodes + nodes + hops > 1 << 16:
        raise DataError(f"--nodes {nodes} makes more than 65536 tokens: use at most 250 nodes")
    if queries > nodes:
        raise DataError(f"--queries {queries} is more than --nodes {nodes}: queries start at "
                        f"different nodes, so use at most {nodes}")


def answers(nodes, hops, queries):
    """meta.json's "answers": the example length, and the positions whose target is an answer,
    by hop count. The target at position t is token t + 1, so query j's answer (token
    K + 3j + 2) is the target of position K + 3j + 1."""
    groups = {f"{h} hop{'s' if h > 1 else ''}": [nodes + 3 * j + 1 for j in range(queries) if 1 + j % hops == h]
              for h in range(1, hops + 1)}
    return {"example_len": nodes + 3 * queries, "groups": groups}


def _perm_hash(perms, seed):
    """A well-mixed uint64 per permutation (row of perms), for the train/val split (splitmix64 of
    the permutation read as a base-K number)."""
    K = perms.shape[1]
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps around, as a hash should
        z = perms.astype(np.uint64) @ (np.uint64(K) ** np.arange(K, dtype=np.uint64)) + np.uint64(seed)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def examples(tok, n, queries, val_fraction, seed, split):
    """n examples of the split, (n, K + 3 * queries) token ids, from a generator seeded by (seed, split).
    A cycle belongs to val when its hash falls in the first val_fraction of the range."""
    K, H = tok.nodes, tok.hops
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    perms = np.empty((0, K), dtype=np.int64)
    while len(perms) < n:
        order = rng.random((2 * n, K)).argsort(axis=1)  # the cycle order[0] -> order[1] -> ... -> order[0]
        p = np.empty_like(order)
        np.put_along_axis(p, order, np.roll(order, -1, axis=1), axis=1)  # p[order[i]] = order[i + 1]
        is_val = _perm_hash(p, seed) < np.uint64(val_fraction * 2.0 ** 64)
        perms = np.concatenate([perms, p[is_val == (split == "val")]])
    perms, rows = perms[:n], np.arange(n)[:, None]
    sources = rng.random((n, K)).argsort(axis=1)             # the edges in random order
    edges = tok.edge(sources, perms[rows, sources])
    starts = rng.random((n, K)).argsort(axis=1)[:, :queries]  # distinct start nodes
    cols = [edges]
    for j in range(queries):
        h, a = 1 + j % H, starts[:, j]
        answer = a
        for _ in range(h):
            answer = perms[np.arange(n), answer]
        cols += [np.full((n, 1), tok.hop(h)), a[:, None], answer[:, None]]
    return np.concatenate(cols, axis=1)
