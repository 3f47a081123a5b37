"Checkpoints, the run lock and the data cache: weights-only loading, one run per folder (two real processes), no host sync per batch, atomic writes on a full disk"
import io, json, os, resource, signal, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn
import torch.nn.functional as F
from fastai.basics import Learner, DataLoaders, Callback, set_seed
from fastai.losses import CrossEntropyLossFlat
import fastai.callback.progress  # `Learner.no_bar`
from fastai_simclr.checkpoint import (CheckpointError, NonFiniteLossError, RunLock, RunLockedError, LOCK_NAME, load_checkpoint,
                                      fit_resumable, EpochCheckpoint, FiniteLossGuard, ReseedEachEpoch, atomic_save)
from fastai_simclr.model import save_encoder, load_encoder, cifar_resnet18, create_classifier
from fastai_simclr.optim import TorchAdam
from fastai_simclr.utils import OutputError, atomic_write_json
from conftest import copy_subset

ROOT = Path(__file__).resolve().parents[1]

class Evil:
    "Unpickling this creates the file `marker` (`io.open(marker, 'w')`): what a crafted checkpoint could do"
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (io.open, (self.marker, 'w'))

# ---------------------------------------------------------------- weights-only loading

def test_crafted_checkpoint_refused_and_runs_nothing(tmp_path):
    marker = tmp_path/'created'
    ck = {'model': {}, 'opt': {}, 'epoch': 1, 'history': [], 'extra': None, 'x': Evil(marker)}
    torch.save(ck, tmp_path/'checkpoint.pth')
    with pytest.raises(CheckpointError, match=r'names a Python object \(io\.open\).*not loaded'):
        load_checkpoint(tmp_path/'checkpoint.pth')
    assert not marker.exists()
    # resuming a phase from it is refused the same way, before anything is loaded into the learner
    with pytest.raises(CheckpointError, match='io.open'): fit_resumable(_synth(), 2, tmp_path/'checkpoint.pth')
    assert not marker.exists()
    torch.load(tmp_path/'checkpoint.pth', weights_only=False)   # the file is live: a full unpickling creates the file
    assert marker.exists()

def test_crafted_encoder_refused(tmp_path):
    marker = tmp_path/'created'
    torch.save({'conv1.weight': Evil(marker)}, tmp_path/'enc.pth')
    with pytest.raises(ValueError, match=r'names a Python object \(io\.open\)'): load_encoder(tmp_path/'enc.pth')
    assert not marker.exists()

def _synth(seed=0, n=192, bs=32):
    set_seed(seed)
    x = torch.randn(n + 64, 4); y = x @ torch.tensor([1., -2., 3., .5]) + 0.1*torch.randn(n + 64)
    dls = DataLoaders.from_dsets(list(zip(x[:n], y[:n])), list(zip(x[n:], y[n:])), bs=bs, device='cpu')
    return Learner(dls, nn.Linear(4, 1), loss_func=lambda p,t: F.mse_loss(p.squeeze(-1), t), lr=0.05)

def _tiny_classifier(seed=0):
    "The project's classifier (CIFAR ResNet-18 and a head) with its optimizer, `TorchAdam`, on 32 random images"
    set_seed(seed)
    x, y = torch.rand(48, 3, 32, 32), torch.randint(0, 10, (48,))
    dls = DataLoaders.from_dsets(list(zip(x[:32], y[:32])), list(zip(x[32:], y[32:])), bs=16, device='cpu')
    return Learner(dls, create_classifier(cifar_resnet18(), 10), loss_func=CrossEntropyLossFlat(), opt_func=TorchAdam, lr=1e-3)

@pytest.mark.parametrize('make', [_synth, _tiny_classifier], ids=['fastai_Adam', 'TorchAdam_resnet18'])
def test_project_checkpoints_load_weights_only(tmp_path, make):
    "Model, optimizer state, history and extra all load with weights_only=True, and the resumed fit equals the uninterrupted one"
    full = fit_resumable(make(), 3, tmp_path/'full.pth', seed=1, extra={'phase': 'x', 'fold': 0, 'seed': 1})
    class Stop(Callback):
        def after_epoch(self):   # runs before `EpochCheckpoint`: epoch 1 is lost, as in a crash, epoch 0 is saved
            if self.epoch == 1: raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): fit_resumable(make(), 3, tmp_path/'cut.pth', seed=1, cbs=Stop(), extra={'phase': 'x', 'fold': 0, 'seed': 1})
    ck = torch.load(tmp_path/'cut.pth', weights_only=True)
    assert set(ck) == {'model', 'opt', 'epoch', 'history', 'extra'} and ck['epoch'] == 1 and ck['extra']['phase'] == 'x'
    resumed = fit_resumable(make(), 3, tmp_path/'cut.pth', seed=1, extra={'phase': 'x', 'fold': 0, 'seed': 1})
    assert [(r['epoch'], r['train_loss'], r['valid_loss'], r['lr']) for r in resumed] == \
           [(r['epoch'], r['train_loss'], r['valid_loss'], r['lr']) for r in full]

# ---------------------------------------------------------------- one run per folder, two real processes

HOLDER = textwrap.dedent('''
    import sys, time
    from fastai_simclr.checkpoint import RunLock
    lock = RunLock(sys.argv[1]).acquire()
    print('held', flush=True)
    sys.stdin.read()          # hold until the test closes our stdin (or kills us)
    lock.release()
    print('released', flush=True)
''')
TAKER = textwrap.dedent('''
    import sys, json
    from fastai_simclr.checkpoint import RunLock, RunLockedError
    try: lock = RunLock(sys.argv[1]).acquire()
    except RunLockedError as e: print(e, file=sys.stderr); sys.exit(3)
    print(json.dumps({'previous': lock.previous}))
''')

def _py(code, *args, **kw): return [sys.executable, '-c', code, *map(str, args)]

def _start_holder(folder):
    p = subprocess.Popen(_py(HOLDER, folder), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert p.stdout.readline().strip() == 'held', p.stderr.read()
    return p

def _take(folder):
    return subprocess.run(_py(TAKER, folder), capture_output=True, text=True, timeout=120, env={**os.environ, 'PYTHONPATH': str(ROOT)})

def test_second_process_refused_naming_the_holder(tmp_path):
    import socket
    folder = tmp_path/'run'
    a = _start_holder(folder)
    try:
        r = _take(folder)
        assert r.returncode == 3, r.stderr
        msg = r.stderr.strip()
        assert len(msg.splitlines()) == 1 and 'is in use by another run' in msg and str(folder) in msg
        assert f'PID {a.pid} ' in msg and f'on host {socket.gethostname()}' in msg and 'started 20' in msg
    finally:
        a.stdin.close(); a.wait(timeout=60)
    assert a.stdout.read().strip() == 'released'
    assert not (folder/LOCK_NAME).exists()
    r = _take(folder)   # free again
    assert r.returncode == 0 and json.loads(r.stdout)['previous'] is None, r.stderr

def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    folder = tmp_path/'run'
    a = _start_holder(folder)
    a.send_signal(signal.SIGKILL); a.wait(timeout=60)
    assert json.loads((folder/LOCK_NAME).read_text())['pid'] == a.pid   # the dead holder's file is still there...
    r = _take(folder)
    assert r.returncode == 0, r.stderr                                  # ...but the kernel released its lock
    assert json.loads(r.stdout)['previous']['pid'] == a.pid

def test_runlock_refuses_a_file_and_is_an_oserror(tmp_path):
    (tmp_path/'f').write_text('mine')
    with pytest.raises(OutputError, match='is a file, not a folder'): RunLock(tmp_path/'f').acquire()
    assert (tmp_path/'f').read_text() == 'mine'
    assert issubclass(RunLockedError, OSError)   # the CLI reports OSError as one line, exit 2

# ---------------------------------------------------------------- no host synchronisation per batch (issue 11)

SYNCS = {'Tensor.item': (torch.Tensor, 'item'), 'Tensor.cpu': (torch.Tensor, 'cpu'), 'Tensor.tolist': (torch.Tensor, 'tolist'),
         'Tensor.__bool__': (torch.Tensor, '__bool__'), 'Tensor.__float__': (torch.Tensor, '__float__'),
         'Tensor.__int__': (torch.Tensor, '__int__'), 'torch.nonzero': (torch, 'nonzero')}

class _InBatch(Callback):
    "Marks the span from `before_batch` to `after_batch` of each training batch"
    def __init__(self, flag, first): self.flag, self.order = flag, (-100 if first else 100)
    def before_batch(self):
        if self.training and self.order < 0: self.flag[0] = True
    def after_batch(self):
        if self.order > 0: self.flag[0] = False

def _syncs_in_batches(monkeypatch, cbs, n_batches):
    "Host synchronisations made during the training batches of a 2-epoch fit (`n_batches` per epoch)"
    flag, counts = [False], {k: 0 for k in SYNCS}
    for k,(owner, name) in SYNCS.items():
        orig = getattr(owner, name)
        def wrapper(*a, _k=k, _orig=orig, **kw):
            if flag[0]: counts[_k] += 1
            return _orig(*a, **kw)
        monkeypatch.setattr(owner, name, wrapper)
    learn = _synth(n=32*n_batches)
    with learn.no_bar(): learn.fit(2, cbs=[_InBatch(flag, True), *cbs, _InBatch(flag, False)])
    monkeypatch.undo()
    return counts

def test_no_host_sync_per_batch(monkeypatch, tmp_path):
    base = _syncs_in_batches(monkeypatch, [], 6)
    ours = _syncs_in_batches(monkeypatch, [ReseedEachEpoch(1), FiniteLossGuard(), EpochCheckpoint(tmp_path/'c.pth')], 6)
    assert ours == base, {k: ours[k] - base[k] for k in ours}   # nothing added inside the batches
    assert load_checkpoint(tmp_path/'c.pth')['epoch'] == 2      # and they did their work

def test_nan_guard_names_first_bad_batch_without_per_batch_sync(tmp_path):
    class PoisonAt(Callback):
        def after_pred(self):
            if self.training and (self.epoch, self.iter) == (1, 2): self.learn.pred = self.pred * float('nan')
    with pytest.raises(NonFiniteLossError, match=r'loss is nan at epoch 1 \(0-based\), batch 2;'):
        fit_resumable(_synth(), 3, tmp_path/'c.pth', cbs=PoisonAt())
    assert load_checkpoint(tmp_path/'c.pth')['epoch'] == 1   # the bad epoch was not saved

# ---------------------------------------------------------------- full disk and failed writes: one line, file named, no temp

def _limited(code, limit, cwd):
    "Run `code` in a process whose files may not grow beyond `limit` bytes (RLIMIT_FSIZE: no root, no mount)"
    def pre(): resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, timeout=300, cwd=cwd,
                          preexec_fn=pre, env={**os.environ, 'PYTHONPATH': str(ROOT)})

WRITERS = {
    'checkpoint': "from fastai_simclr.checkpoint import atomic_save; atomic_save({'model': {'w': torch.zeros(2**20)}, 'opt': {}, 'epoch': 1, 'history': []}, 'out/checkpoint.pth')",
    'encoder': "from fastai_simclr.model import save_encoder, cifar_resnet18; save_encoder(cifar_resnet18(), 'out/encoder.safetensors')",
    'json': "from fastai_simclr.utils import atomic_write_json; atomic_write_json('out/result.json', {'x': list(range(10**6))})",
}

@pytest.mark.parametrize('kind', list(WRITERS))
def test_write_beyond_file_size_limit(tmp_path, kind):
    name = {'checkpoint': 'checkpoint.pth', 'encoder': 'encoder.safetensors', 'json': 'result.json'}[kind]
    (tmp_path/'out').mkdir(); (tmp_path/'out'/name).write_bytes(b'the previous version')
    r = _limited(f'''
        import sys, torch
        from fastai_simclr.utils import OutputError
        try: {WRITERS[kind]}
        except OutputError as e: print(e, file=sys.stderr); sys.exit(2)
    ''', 2**18, tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    msg = r.stderr.strip()
    assert len(msg.splitlines()) == 1 and f'could not write out/{name}: File too large' in msg, msg
    assert 'unexpected pos' not in msg
    assert sorted(p.name for p in (tmp_path/'out').iterdir()) == [name]          # no temporary file left
    assert (tmp_path/'out'/name).read_bytes() == b'the previous version'        # the old file untouched

# ---------------------------------------------------------------- the data cache

@pytest.fixture
def two_folders(cifar_path, tmp_path):
    return copy_subset(cifar_path, tmp_path/'a', 2, 1), copy_subset(cifar_path, tmp_path/'b', 3, 1)

def _npz(d): return sorted(p.name for p in Path(d).glob('cifar10_*.npz'))

def test_cache_files_of_two_folders_coexist(two_folders, tmp_path):
    from fastai_simclr.data import load_cifar10
    a, b = two_folders; cache = tmp_path/'cache'
    da = load_cifar10(a, cache_dir=cache, verbose=False)
    db = load_cifar10(b, cache_dir=cache, verbose=False)
    assert len(_npz(cache)) == 2 and da.cache_file.exists() and db.cache_file.exists() and da.cache_file != db.cache_file
    t = da.cache_file.stat().st_mtime_ns
    da2 = load_cifar10(a, cache_dir=cache, verbose=False)    # read from its cache, not decoded and written again
    assert da2.cache_file == da.cache_file and da.cache_file.stat().st_mtime_ns == t
    assert torch.equal(da2.train_x, da.train_x) and torch.equal(da2.test_y, da.test_y)
    # a changed folder replaces its own cache file and keeps the other folder's
    sorted((a/'train'/'cat').iterdir())[0].unlink()
    da3 = load_cifar10(a, cache_dir=cache, verbose=False)
    assert len(da3.train_x) == len(da.train_x) - 1
    assert _npz(cache) == sorted([da3.cache_file.name, db.cache_file.name]) and not da.cache_file.exists()

def test_failed_cache_write_leaves_no_temp(two_folders, tmp_path, monkeypatch):
    from fastai_simclr.data import load_cifar10
    import errno
    a, _ = two_folders; cache = tmp_path/'cache'
    def savez_full(f, **arrs): f.write(b'\0' * 1000); raise OSError(errno.ENOSPC, 'No space left on device')
    monkeypatch.setattr(np, 'savez', savez_full)
    d = load_cifar10(a, cache_dir=cache, verbose=False)
    assert d.cache_file is None and len(d.train_x) == 20       # the data is still there
    assert list(cache.iterdir()) == []                         # neither a cache nor its temporary file

def test_temp_of_a_dead_writer_is_removed(two_folders, tmp_path):
    from fastai_simclr.data import load_cifar10
    a, _ = two_folders; cache = tmp_path/'cache'; cache.mkdir()
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale, live = cache/f'.cifar10_x_y.npz.{pid}.0123abcd.tmp', cache/f'.cifar10_x_y.npz.{os.getpid()}.0123abcd.tmp'
    for f in (stale, live): f.write_bytes(b'half')
    load_cifar10(a, cache_dir=cache, verbose=False)
    assert not stale.exists() and live.exists()                # a live writer's file is left alone


# ---------------------------------------------------------------- checkpoints by wall time

def test_library_default_saves_by_wall_time(tmp_path, monkeypatch):
    "Without `$FASTAI_SIMCLR_CHECKPOINT_EVERY` (the tests set 0), a phase of fast epochs is saved once, after its last epoch"
    import fastai_simclr.checkpoint as ck
    monkeypatch.delenv('FASTAI_SIMCLR_CHECKPOINT_EVERY')
    saves = []
    monkeypatch.setattr(ck, 'atomic_save', lambda obj, path: saves.append(obj['epoch']))
    hist = fit_resumable(_synth(), 4, tmp_path/'c.pth', seed=1)
    assert saves == [4] and len(hist) == 4

def test_bad_interval_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv('FASTAI_SIMCLR_CHECKPOINT_EVERY', '-5')
    with pytest.raises(ValueError, match=r"^the checkpoint interval \$FASTAI_SIMCLR_CHECKPOINT_EVERY must be a number of seconds >= 0, got '-5'$"):
        fit_resumable(_synth(), 2, tmp_path/'c.pth')
