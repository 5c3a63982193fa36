"""
stdlib_next_line: a multiple-choice task for lm-evaluation-harness, built from the held-out
stdlib files (the val split of `prepare.py stdlib`), so that the demo's model can be evaluated
offline the way a GPT-2 is evaluated on HellaSwag:

    python prepare.py stdlib                                        # also writes data/stdlib/tasks/
    python eval.py --out_dir=out-tiny --tasks=stdlib_next_line      # eval.py finds the task there

A question is the code before a line; the choices are that line and three lines of the other
held-out files, re-indented as the true line is, so that the indentation gives nothing away.
Scoring as lm-eval does for every multiple-choice task: acc, the choice with the highest
log-likelihood; acc_norm, per byte of the choice. Chance is 0.25. The second question on
Python 3.11.7 (http/cookiejar.py; the context is cut here, the 20 spaces of indent too):

    context:  "...# cookies.txt regards 'Set-Cookie: foo' as a cookie\n
               ...# with no name, whereas http.cookiejar regards it as a\n
               ...# cookie with no value.\n
               ...name = value\n"
    choices:  "...if aslist and not aslist[-1].strip():"
              "...class StreamReader(Codec,codecs.StreamReader):"
              "...def encode(self, input, final=False):"
              "...value = None"                                 (the true next line)

The questions are drawn with a seeded generator from the files in a fixed order: the same
Python gives the same task.
"""

import json
import os
import random

TASK = 'stdlib_next_line'
N_QUESTIONS = 400
CONTEXT_CHARS = 240   # code before the line, cut at a line start; eval.py cuts further to the model's block_size
MIN_CHARS, MAX_CHARS = 12, 72  # a line worth guessing: not blank or a lone bracket, and not too long


def candidate_lines(text):
    """(index, line) of the lines of a file that can be asked about (and serve as distractors)."""
    return [(i, line) for i, line in enumerate(text.split('\n'))
            if MIN_CHARS <= len(line.strip()) <= MAX_CHARS and not line.strip().startswith('#')]


def questions(texts, n=N_QUESTIONS, seed=2357):
    """n questions from the files' texts (a list, in a fixed order): dicts with context, choices,
    label (the index of the true line) and source (file number, line number)."""
    rng = random.Random(seed)
    lines = [text.split('\n') for text in texts]
    candidates = [candidate_lines(text) for text in texts]
    askable = [(f, i) for f, cands in enumerate(candidates) for i, _ in cands if i > 0]
    out = []
    for f, i in rng.sample(askable, min(n, len(askable))):
        true = lines[f][i]
        indent = true[:len(true) - len(true.lstrip())]
        others = [line for g, cands in enumerate(candidates) if g != f for _, line in cands]
        choices = [true]
        while len(choices) < 4:
            line = indent + rng.choice(others).strip()
            if line not in choices:
                choices.append(line)
        rng.shuffle(choices)
        before = '\n'.join(lines[f][:i]) + '\n'
        context = before[-CONTEXT_CHARS:]
        context = context[context.find('\n') + 1:] if len(before) > CONTEXT_CHARS else context
        out.append(dict(context=context, choices=choices, label=choices.index(true), source=[f, i]))
    return out


def write_task(out_dir, texts):
    """Write out_dir/TASK.jsonl (the questions) and out_dir/TASK.yaml (lm-eval's task, which names
    the jsonl by its absolute path). Returns the number of questions."""
    os.makedirs(out_dir, exist_ok=True)
    data = os.path.abspath(os.path.join(out_dir, f'{TASK}.jsonl'))
    qs = questions(texts)
    with open(data, 'w') as f:
        f.writelines(json.dumps(q) + '\n' for q in qs)
    # the choice follows the context directly (no space between them): target_delimiter ""
    yaml = f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {json.dumps(data)}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
    with open(os.path.join(out_dir, f'{TASK}.yaml'), 'w') as f:
        f.write(yaml)
    return len(qs)
