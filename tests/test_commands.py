"""
No dead command in the docs: every command that README.md, docs/*.md and results/README.md
show must still exist. A command is a line of a ``` block, of an indented code block or after
`$ `, or an inline `code` span, that starts with `python `, `python3 `, `python -m `, `torchrun `
or `make ` (`&&`-chained parts apart, `# comments` dropped). For each script or module named,
the file must exist and `--help` must exit 0; for each make target, `make -n TARGET` must.
results/*/results.md and results.json are left out: they record the commands as they were run.

Also: every relative link in those files points at a file that exists, and at a heading that
exists when it names one.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIXES = ('python ', 'python3 ', 'torchrun ', 'make ')
SKIP_MODULES = ('pytest', 'pip')  # not ours: `python -m pytest`, `python -m pip install ...`


def doc_files(root=ROOT):
    docs = os.path.join(root, 'docs')
    names = sorted(os.path.join('docs', f) for f in os.listdir(docs) if f.endswith('.md')) if os.path.isdir(docs) else []
    return ['README.md'] + names + [os.path.join('results', 'README.md')]


def code_lines(text):
    """(line number, text) of each code line: inside ``` fences, indented 4+ spaces outside a
    list, or after `$ `; a line ending in a backslash is joined with the next."""
    out, fenced, prev_blank, in_indented = [], False, True, False
    lines = text.split('\n')
    i = 0
    while i < len(lines):
        line, no = lines[i], i + 1
        if line.lstrip().startswith('```'):
            fenced = not fenced
        else:
            indented = line.startswith('    ') and (prev_blank or in_indented) and not fenced
            in_indented = indented or (in_indented and not line.strip())
            dollar = line.lstrip().startswith('$ ')
            if fenced or indented or dollar:
                while line.rstrip().endswith('\\') and i + 1 < len(lines):
                    i += 1
                    line = line.rstrip()[:-1] + ' ' + lines[i].strip()
                line = line.strip()
                out.append((no, line[2:] if line.startswith('$ ') else line))
        prev_blank = not line.strip()
        i += 1
    return out


def inline_spans(text):
    """(line number, text) of each inline `code` span outside fences, within a paragraph (a span
    may wrap onto the next line)."""
    out, fenced, para, start = [], False, [], 1

    def flush():
        joined = ' '.join(para)
        for m in re.finditer(r'`([^`]+)`', joined):
            out.append((start, m.group(1).strip()))

    for no, line in enumerate(text.split('\n'), 1):
        if line.lstrip().startswith('```'):
            flush()
            para, fenced = [], not fenced
            continue
        if fenced:
            continue
        if not line.strip():
            flush()
            para = []
        else:
            if not para:
                start = no
            para.append(line.strip())
    flush()
    return out


def commands(text):
    """(line number, command) for each command the text shows, one per `&&` part."""
    found = []
    for no, line in code_lines(text) + inline_spans(text):
        for part in re.split(r'&&|;', line):
            part = part.strip()
            if part.startswith(PREFIXES):
                try:
                    words = shlex.split(part, comments=True)
                except ValueError:  # an unbalanced quote: keep what is before it
                    words = part.split('#')[0].split()
                found.append((no, words))
    return found


def target(words):
    """What a command needs to exist: ('script', path), ('module', name), ('make', target),
    or None for a command that is not ours (`python -m pytest`, `pip`)."""
    prog, args = words[0], words[1:]
    if prog == 'make':
        goals = [a for a in args if not a.startswith('-') and '=' not in a]
        return ('make', goals[0] if goals else '')
    if prog == 'torchrun':
        scripts = [a for a in args if a.endswith('.py') and not a.startswith('-')]
        return ('script', scripts[0]) if scripts else ('torchrun', ' '.join(args))
    if args[:1] == ['-m']:
        mod = args[1] if len(args) > 1 else ''
        return None if mod.split('.')[0] in SKIP_MODULES else ('module', mod)
    scripts = [a for a in args if not a.startswith('-')]
    return ('script', scripts[0]) if scripts else ('python', ' '.join(args))


def placeholder(name):
    """`python -m experiments.<study>`, `prepare.py DATASET`: a pattern, not a command."""
    return bool(re.search(r'[<>]|\b[A-Z]{3,}\b', name))


def collect(root=ROOT, files=None):
    """{target: [where, ...]} over the doc files, where = 'FILE:LINE: command'."""
    found = {}
    for rel in files or doc_files(root):
        with open(os.path.join(root, rel), encoding='utf-8') as f:
            text = f.read()
        for no, words in commands(text):
            t = target(words)
            if t is not None and not placeholder(t[1]):
                found.setdefault(t, []).append(f'{rel}:{no}: {" ".join(words)}')
    return found


def module_file(root, name):
    base = os.path.join(root, *name.split('.'))
    for path in (base + '.py', os.path.join(base, '__init__.py')):
        if os.path.isfile(path):
            return path
    return None


# Runs in one fresh Python: each script or module with --help, as `python X.py` and `python -m X`
# would (sys.path[0] the script's folder, or the root for -m), its output swallowed; prints
# {"kind:name": exit code, or the error}. One torch import for all, not one per command.
HELP_RUNNER = r"""
import io, json, os, runpy, sys
from contextlib import redirect_stderr, redirect_stdout
out, path0 = {}, sys.path[0]
for kind, name in json.loads(sys.argv[1]):
    sys.argv = [name, '--help']
    sys.path[0] = os.path.dirname(os.path.abspath(name)) if kind == 'script' else path0
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
            if kind == 'script':
                runpy.run_path(name, run_name='__main__')
            else:
                runpy.run_module(name, run_name='__main__', alter_sys=True)
        code = 0
    except SystemExit as e:
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    except BaseException as e:
        code = f'{type(e).__name__}: {e}'
    out[f'{kind}:{name}'] = code
print(json.dumps(out))
"""


def check_make(name, root=ROOT):
    if shutil.which('make') is None:
        pytest.skip('make is not installed')
    r = subprocess.run(['make', '-n'] + ([name] if name else []), cwd=root, capture_output=True, text=True,
                       timeout=60)
    return None if r.returncode == 0 else f'make -n {name} exited {r.returncode}: {r.stderr.strip()[-500:]}'


def check_all(targets, root=ROOT):
    """{target: None if it exists and answers --help (make: make -n), else what is wrong}."""
    problems, runs = {}, []
    for kind, name in targets:
        if kind == 'make':
            problems[kind, name] = check_make(name, root)
        elif kind == 'script' and not os.path.isfile(os.path.join(root, name)):
            problems[kind, name] = f'no file {name}'
        elif kind == 'module' and module_file(root, name) is None:
            problems[kind, name] = f'no module {name} (no {name.replace(".", "/")}.py)'
        elif kind in ('script', 'module'):
            runs.append((kind, name))
        else:
            problems[kind, name] = f'cannot tell which script `{kind} {name}` runs'
    if runs:
        r = subprocess.run([sys.executable, '-c', HELP_RUNNER, json.dumps(runs)], cwd=root, capture_output=True,
                           text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert r.returncode == 0, r.stderr[-2000:]
        codes = json.loads(r.stdout.strip().splitlines()[-1])
        for kind, name in runs:
            code = codes[f'{kind}:{name}']
            shown = f'python {name}' if kind == 'script' else f'python -m {name}'
            problems[kind, name] = None if code == 0 else f'{shown} --help exited {code}'
    return problems


FOUND = collect()
TARGETS = sorted(FOUND)


@lru_cache(maxsize=None)
def results():
    return check_all(TARGETS)


def test_commands_found():
    # the extraction must not silently find nothing: the docs show dozens of commands
    assert sum(len(v) for v in FOUND.values()) > 15, FOUND
    kinds = {k for k, _ in TARGETS}
    assert {'script', 'module', 'make'} <= kinds, TARGETS


@pytest.mark.parametrize('t', TARGETS, ids=[f'{k}:{n}' for k, n in TARGETS])
def test_command_exists(t):
    problem = results()[t]
    assert problem is None, problem + '\nshown at:\n  ' + '\n  '.join(FOUND[t])


def test_extraction(tmp_path):
    """The parser on a made-up doc, and a dead command caught."""
    doc = tmp_path / 'doc.md'
    doc.write_text('\n'.join([
        'Run `python -m experiments.nosuch --quick` or `python -m pytest -q`; prose that says',
        'python is not a command, and neither does make sense.',
        '```',
        'python prepare.py stdlib && python train.py configs/tiny.py   # a comment && more',
        'torchrun --nnodes=2 --rdzv_endpoint=HOST:29500 \\',
        '         train.py configs/loop6.py',
        'NCCL_IB_DISABLE=1 pip install lm-eval',
        '```',
        '',
        '    make demo    # indented block',
        '$ python3 sample.py --start="def "',
    ]))
    found = collect(str(tmp_path), ['doc.md'])
    assert sorted(found) == [('make', 'demo'), ('module', 'experiments.nosuch'),
                             ('script', 'prepare.py'), ('script', 'sample.py'), ('script', 'train.py')]
    assert len(found[('script', 'train.py')]) == 2  # python and torchrun, the latter joined across lines
    (tmp_path / 'broken.py').write_text("import sys\nif '--help' in sys.argv:\n    sys.exit(2)\n")
    (tmp_path / 'fine.py').write_text("import sys\nprint('usage')\nsys.exit(0)\n")
    assert check_all([('module', 'experiments.nosuch'), ('script', 'nosuch.py'), ('script', 'broken.py'),
                      ('script', 'fine.py')], root=str(tmp_path)) == {
        ('module', 'experiments.nosuch'): 'no module experiments.nosuch (no experiments/nosuch.py)',
        ('script', 'nosuch.py'): 'no file nosuch.py',
        ('script', 'broken.py'): 'python broken.py --help exited 2',
        ('script', 'fine.py'): None}


# --- links -------------------------------------------------------------------------------------

def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(path):
    with open(path, encoding='utf-8') as f:
        text = re.sub(r'```.*?```', '', f.read(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r'^#+\s+(.*)$', text, flags=re.M)}


def dead_links(root=ROOT, files=None):
    dead = []
    for rel in files or doc_files(root):
        path = os.path.join(root, rel)
        with open(path, encoding='utf-8') as f:
            text = re.sub(r'```.*?```', '', f.read(), flags=re.S)
        for m in re.finditer(r'\]\(([^)\s]+)\)', text):
            link = m.group(1)
            if re.match(r'[a-z]+:', link):  # https:, mailto:
                continue
            file_part, _, anchor = link.partition('#')
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
            if not os.path.exists(dest):
                dead.append(f'{rel}: {link} (no such file)')
            elif anchor and dest.endswith('.md') and anchor not in anchors(dest):
                dead.append(f'{rel}: {link} (no such heading)')
    return dead


def test_links():
    assert dead_links() == []


def test_dead_link_caught(tmp_path):
    (tmp_path / 'a.md').write_text('# A title: here\n[ok](a.md#a-title-here) [gone](b.md) [no](a.md#nope)\n')
    assert dead_links(str(tmp_path), ['a.md']) == ['a.md: b.md (no such file)', 'a.md: a.md#nope (no such heading)']
