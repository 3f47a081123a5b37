"Shared fixtures: real CIFAR-10 (from `$FASTAI_SIMCLR_DATA` or fastai's download) and small real folders made from it"
import os, shutil
from pathlib import Path
import pytest
from fastai_simclr.data import load_cifar10, cifar10_path

# a checkpoint after every epoch (the library's default is at most one a minute): the fault tests kill a run after its
# k-th checkpoint ('checkpoint.saved:k'), in this process and in the CLI runs it starts, which inherit this
os.environ['FASTAI_SIMCLR_CHECKPOINT_EVERY'] = '0'

@pytest.fixture(scope='session')
def cifar_path():
    "The real CIFAR-10 folder"
    return cifar10_path()

@pytest.fixture(scope='session')
def cifar(cifar_path):
    "Decoded real CIFAR-10"
    return load_cifar10(cifar_path, verbose=False)

def copy_subset(src:Path, dst:Path, per_class:int=4, test_per_class:int=2):
    "A small CIFAR-10 folder with the first `per_class` real images of each class"
    for split,n in (('train',per_class),('test',test_per_class)):
        for cdir in sorted((src/split).iterdir()):
            if not cdir.is_dir(): continue
            (dst/split/cdir.name).mkdir(parents=True, exist_ok=True)
            for f in sorted(cdir.iterdir())[:n]: shutil.copy(f, dst/split/cdir.name/f.name)
    return dst

@pytest.fixture
def small_cifar(cifar_path, tmp_path):
    "A writable folder of 40 train and 20 test real CIFAR-10 images"
    return copy_subset(cifar_path, tmp_path/'cifar10')

def run_cli(*args, timeout=900, **kw):
    "Run `fastai-simclr` in a subprocess (as `python -m`, so the test uses this checkout's interpreter)"
    import subprocess, sys
    return subprocess.run([sys.executable, '-m', 'fastai_simclr.cli', *args], capture_output=True, text=True, timeout=timeout, **kw)

def run_main(*args):
    "Run `fastai-simclr` in this process (`cli.main`), for refusals that end before any training: no interpreter start and imports"
    import contextlib, io, subprocess
    from fastai_simclr.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err): rc = main([str(a) for a in args])
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())

@pytest.fixture(scope='session')
def smoke_run(tmp_path_factory):
    "One complete `reproduce --preset smoke` run on real CIFAR-10, shared by the tests that only read it"
    out = tmp_path_factory.mktemp('smoke')/'run'
    r = run_cli('reproduce', '--preset', 'smoke', '--out', str(out), '--device', 'cpu')
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r
