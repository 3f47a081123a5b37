"""The library is in sync with its notebooks, and the notebooks are clean.

Each check runs `nbdev-export` / `nbdev-clean` in a temporary copy of the working tree (tracked files plus
untracked ones git does not ignore) and asserts that no file changed, so it works the same in a fresh clone
and in a tree with uncommitted edits, and never touches the real tree."""
import difflib, hashlib, os, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_DIRS = {'.git', '_proc', '_docs', '_site', '_preview', 'test-output', '.pytest_cache', '__pycache__',
             '.ipynb_checkpoints', '.quarto', 'build', 'dist'}


def tree_files(root):
    "The working tree's files (relative paths): what git tracks or would add, else everything but build output"
    try:
        out = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=root,
                             capture_output=True, check=True).stdout.decode()
        files = {f for f in out.split('\0') if f}
    except (OSError, subprocess.CalledProcessError):
        files = {str(p.relative_to(root)) for p in root.rglob('*')
                 if p.is_file() and not SKIP_DIRS & set(p.relative_to(root).parts)}
    return sorted(f for f in files if (root/f).is_file() and not SKIP_DIRS & set(Path(f).parts))


@pytest.fixture
def repo_copy(tmp_path):
    dst = tmp_path/'repo'
    for f in tree_files(ROOT):
        (dst/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT/f, dst/f)
    assert (dst/'pyproject.toml').exists()
    return dst


def snapshot(root):
    "{relative path: sha256} of every file under `root` but build output"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob('*')
            if p.is_file() and not SKIP_DIRS & set(p.relative_to(root).parts)}


def nbdev_cmd(name):
    "The `name` console script of the Python running the tests"
    exe = Path(sys.executable).parent/name
    if exe.exists(): return [str(exe)]
    found = shutil.which(name)
    if not found: pytest.fail(f'{name} not found (install the dev extras: pip install -e ".[dev]")')
    return [found]


def run_and_diff(root, cmd, orig):
    "Run `cmd` in `root`; the files it changed, added or deleted, with diffs of the text ones"
    before = snapshot(root)
    r = subprocess.run(nbdev_cmd(cmd), cwd=root, capture_output=True, text=True, timeout=900,
                       env={**os.environ, 'PYTHONPATH': str(root)})
    assert r.returncode == 0, f'{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
    after = snapshot(root)
    changed = sorted(f for f in before.keys() & after.keys() if before[f] != after[f])
    added, deleted = sorted(after.keys() - before.keys()), sorted(before.keys() - after.keys())
    msgs = []
    for f in changed[:5]:
        if f.endswith('.ipynb'): continue  # json diffs are long; the file name says enough
        a = (orig/f).read_text(errors='replace').splitlines(keepends=True)
        b = (root/f).read_text(errors='replace').splitlines(keepends=True)
        msgs.append(''.join(list(difflib.unified_diff(a, b, f'tree/{f}', f'{cmd}/{f}'))[:60]))
    return changed, added, deleted, '\n'.join(msgs)


def test_library_in_sync_with_notebooks(repo_copy):
    "`nbdev-export` changes nothing: every module is what its notebook exports"
    changed, added, deleted, diffs = run_and_diff(repo_copy, 'nbdev-export', ROOT)
    assert not (changed or added or deleted), (
        'The library is out of sync with its notebooks: run `nbdev-export` and commit what it writes '
        '(never edit the generated modules by hand).\n'
        f'changed: {changed}\nadded: {added}\ndeleted: {deleted}\n{diffs}')


def test_notebooks_clean(repo_copy):
    "`nbdev-clean` changes nothing: notebooks are saved without stray metadata and execution noise"
    changed, added, deleted, diffs = run_and_diff(repo_copy, 'nbdev-clean', ROOT)
    assert not (changed or added or deleted), (
        f'Notebooks are not clean: run `nbdev-clean` and commit them.\nchanged: {changed}\nadded: {added}\n'
        f'deleted: {deleted}\n{diffs}')
