"""
Export a trained model as a Hugging Face folder that travels alone: transformers, lm-eval's
`hf` backend and fine-tuning tools (Trainer, PEFT) load it, offline, without this repository.

    python export.py --out_dir=out-loop6 --to=hf-loop6
    python export.py --out_dir=out-tiny --to=hf-tiny --ckpt=last --overwrite=True

    model = AutoModelForCausalLM.from_pretrained('hf-loop6', trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained('hf-loop6')

A LoopGPT becomes remote code (hf/modeling_loopgpt.py and hf/configuration_loopgpt.py, copied
into the folder, named in config.json's auto_map: trust_remote_code=True runs them); generate()
has the loop's KV cache, with engine.py's kv_budget rule, and n_loop / kv_budget can be set at
load or per call. A GPT becomes transformers' own GPT2LMHeadModel (no remote code). The folder
holds config.json, model.safetensors, generation_config.json, the tokenizer (bytes or GPT-2
BPE, the same ids as ours) and a model card, README.md. The way back:
`python sample.py --init_from=hf-loop6` (or eval.py) loads it into model.py's classes.

Settings: the defaults below, then config files, then --key=value (as train.py).
"""

import os
import sys

if __name__ == '__main__':  # --help: the docstring and the keys below, before anything heavy is imported
    from configurator import answer_help
    answer_help(__file__, sys.argv[1:])

from checkpoint import CheckpointError, checkpoint_file, load_checkpoint, model_from_checkpoint
from configurator import ConfigError, config_keys, configure
from dataformat import DataError
from hf.convert import ConvertError, write_gpt, write_loop, write_tokenizer
from model import LoopGPT
from tokenizer import get_tokenizer

# -----------------------------------------------------------------------------
out_dir = 'out'          # the training run to export
ckpt = 'best'            # 'best' (lowest val loss; falls back to last.pt) or 'last', as sample.py
to = ''                  # the folder to write (required); it must not exist, or be empty, unless overwrite
overwrite = False        # True: write into a folder that is not empty (its files of the same names are replaced)
n_loop = None            # LoopGPT: the loop count the folder runs by default (None: the trained one)
kv_budget = 0            # LoopGPT: the KV cache's loop groups by default in generate() (0: one per iteration)
# -----------------------------------------------------------------------------


class ExportError(Exception):
    """A mistake the user can fix; main() prints it as one line."""


def die(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def check_config(c):
    if not c['to']:
        return "say where to write the folder: --to=DIR (e.g. --to=hf-loop6)."
    if c['ckpt'] not in ('best', 'last'):
        return f"ckpt must be 'best' or 'last', not {c['ckpt']!r}."
    if c['n_loop'] is not None and (not isinstance(c['n_loop'], int) or c['n_loop'] < 1):
        return f"n_loop must be a whole number of at least 1 (or None: as trained), not {c['n_loop']!r}."
    if c['kv_budget'] < 0:
        return f"kv_budget must be 0 (a group per loop iteration) or more, not {c['kv_budget']}."
    if os.path.exists(c['to']) and not os.path.isdir(c['to']):
        return f"{c['to']} is a file: choose a folder name for --to."
    if os.path.isdir(c['to']) and os.listdir(c['to']) and not c['overwrite']:
        return f"{c['to']} exists and is not empty: choose a new folder, or pass --overwrite=True to write into it."
    return None


def load(c):
    """(checkpoint, model, tokenizer) of out_dir's checkpoint, as sample.py picks it."""
    path = checkpoint_file(c['out_dir'], c['ckpt'])
    which = os.path.basename(path)[:-3] if path else c['ckpt']
    ckpt = load_checkpoint(c['out_dir'], which)  # the one-line error if there is none
    model = model_from_checkpoint(ckpt).eval()
    meta = ckpt.get('meta') or {}
    if str(meta.get('tokenizer', '')).startswith('hops'):
        raise ExportError(f"the {meta['tokenizer']} tokenizer (the hops task's words) has no Hugging Face "
                          f"equivalent: export a model trained on text (bytes or gpt2 tokens).")
    try:
        tok = get_tokenizer(meta.get('tokenizer'))
    except DataError as e:
        raise ExportError(e) from None
    if c['n_loop'] is not None:
        if not isinstance(model, LoopGPT):
            raise ExportError("n_loop needs a LoopGPT, but this model is a plain GPT, which does not loop: drop --n_loop.")
        model.n_loop = c['n_loop']
    return ckpt, model, tok


def export(c):
    ckpt, model, tok = load(c)
    os.makedirs(c['to'], exist_ok=True)
    extra = dict(meta=ckpt.get('meta'), model_type=ckpt['model_type'], iter_num=ckpt.get('iter_num'),
                 tokens=ckpt.get('tokens'), best_val_loss=ckpt.get('best_val_loss'))
    if isinstance(model, LoopGPT):
        write_loop(model, c['to'], extra, tok, c['kv_budget'])
    else:
        write_gpt(model, c['to'], extra, tok)
    write_tokenizer(tok, c['to'], model.config.block_size)
    with open(os.path.join(c['to'], 'README.md'), 'w') as f:
        f.write(model_card(c, ckpt, model, tok))
    return model


def model_card(c, ckpt, model, tok):
    import transformers
    cfg, loop = model.config, isinstance(model, LoopGPT)
    train = ckpt.get('config') or {}
    val = ckpt.get('best_val_loss')
    shape = (f"LoopGPT: {cfg.n_layer} shared blocks looped {cfg.n_loop} times"
             + (f", {cfg.n_prelude} prelude and {cfg.n_coda} coda blocks" if cfg.n_prelude or cfg.n_coda else '')
             if loop else f"GPT-2 ({cfg.n_layer} layers), as transformers' GPT2LMHeadModel")
    lines = [
        "---", "library_name: transformers", "tags: [loopgpt, looped-transformer]", "---", "",
        f"# {os.path.basename(os.path.normpath(c['to']))}", "",
        f"{shape}; n_embd {cfg.n_embd}, {cfg.n_head} heads, block size {cfg.block_size}, vocab {cfg.vocab_size}, "
        f"{model.get_num_params() / 1e6:.2f}M parameters. Trained with loopgpt (a reference of \"Loop Neural "
        f"Networks for Parameter Sharing\", arXiv 2409.14199) for {ckpt.get('iter_num', '?')} iterations, "
        f"{ckpt.get('tokens') or '?'} tokens; best val loss {val if val is None else round(float(val), 4)}; "
        f"tokenizer {tok.name}. Exported from {c['out_dir']} ({c['ckpt']}) with transformers "
        f"{transformers.__version__} (tested: 5.25).", "",
        "## Loading", "", "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"model = AutoModelForCausalLM.from_pretrained(DIR{', trust_remote_code=True' if loop else ''})",
        "tokenizer = AutoTokenizer.from_pretrained(DIR)",
        "ids = tokenizer('def ', return_tensors='pt').input_ids",
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=50, do_sample=True)[0]))", "```", ""]
    if loop:
        lines += [
            "`trust_remote_code=True` runs this folder's `modeling_loopgpt.py` (read it first: it is one file). "
            "AutoTokenizer reads config.json too and may ask whether to run that code; the tokenizer needs none.",
            "", "## Loop count and KV cache", "",
            f"- trained loop count {cfg.n_loop} (`n_loop_trained`), run by default: {model.n_loop} (`n_loop`); "
            "set another at load (`from_pretrained(DIR, trust_remote_code=True, n_loop=k)`) or per call "
            "(`model(ids, n_loop=k)`, `model.generate(ids, n_loop=k)`). Iterations past the trained count reuse "
            "its last gate.",
            f"- training settings: input_injection {cfg.input_injection}, loop_norm {cfg.loop_norm}, "
            f"loop_sampling {cfg.loop_sampling}, learn_gates {cfg.learn_gates}, bptt_loops {cfg.bptt_loops}.",
            "- `generate(..., kv_budget=k)` keeps k loop groups of keys and values: iteration n stores in group "
            "min(n, k) (0, the default: one group per iteration, the exact cache). k = 1 keeps each token's last "
            "iteration only.",
            "- per-token exit (loopgpt's `--exit_threshold`) is not in this folder's generate(): every token runs "
            "n_loop iterations.", ""]
    lines += ["## Training config", "", "```", *(f"{k} = {v!r}" for k, v in sorted(train.items())), "```", ""]
    return '\n'.join(lines)


def main(argv):
    try:
        c = configure(config_keys(globals()), argv)
    except ConfigError as e:
        die(e)
    problem = check_config(c)
    if problem:
        die(problem)
    try:
        model = export(c)
    except (ExportError, CheckpointError, ConvertError) as e:
        die(e)
    kind = 'LoopGPT (remote code: trust_remote_code=True)' if isinstance(model, LoopGPT) else 'GPT2LMHeadModel'
    print(f"wrote {c['to']}: {kind}", file=sys.stderr)


if __name__ == '__main__':
    main(sys.argv[1:])
