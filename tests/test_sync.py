"""No host synchronisation from this library inside a training step, the DataLoader's batch transforms included.

On a GPU these make the host wait for the device (or copy to it from pageable memory): `Tensor.item`, `.cpu`, `.tolist`,
`.numpy`, `torch.nonzero`/`Tensor.nonzero`, `bool()`/`int()`/`float()` of a tensor, indexing with a boolean mask, and
`torch.tensor`/`torch.as_tensor(python data, device=...)`. Here (CPU only) they are counted while the batches of a
`learn.fit` run, from the batch transforms that make batch `i` to the last `after_batch` of step `i` (`i >= 1`), and each
call is attributed to the file that made it: none may come from `fastai_simclr` (fastai's own progress bar is left out
with `no_bar`; PyTorch's for-loop Adam reads its step counter on the host by design, a CPU tensor even on a GPU)."""
import sys
from pathlib import Path
import pytest, torch
from fastai.basics import Callback
import fastai_simclr
from fastai_simclr.data import unlabeled_dls, fold_dls
from fastai_simclr.recipes import get_preset, pretrain_learner, baseline_learner, preset_train_augs
from fastai_simclr.checkpoint import EpochCheckpoint, FiniteLossGuard

PKG = str(Path(fastai_simclr.__file__).resolve().parent)
TORCH = str(Path(torch.__file__).parent)


def _has_mask(i)->bool:
    "Whether the index `i` holds a boolean tensor (its size is only known after the device counted it)"
    if isinstance(i, tuple): return any(_has_mask(o) for o in i)
    return isinstance(i, torch.Tensor) and i.dtype == torch.bool

def _from_python(a, k)->bool:
    "A `torch.tensor`/`as_tensor` call that puts Python data (not a tensor) on a device named by `device=`"
    return k.get('device') is not None and bool(a) and not isinstance(a[0], torch.Tensor)


class SyncCounter:
    "Patch the synchronising calls; record the file of our package that made each one while `active`"
    NAMES = [(torch.Tensor, 'item', None), (torch.Tensor, 'cpu', None), (torch.Tensor, 'tolist', None), (torch.Tensor, 'numpy', None),
             (torch.Tensor, '__bool__', None), (torch.Tensor, '__int__', None), (torch.Tensor, '__float__', None),
             (torch, 'nonzero', None), (torch.Tensor, 'nonzero', None),
             (torch.Tensor, '__getitem__', lambda a, k: _has_mask(a[1])), (torch.Tensor, '__setitem__', lambda a, k: _has_mask(a[1])),
             (torch, 'tensor', _from_python), (torch, 'as_tensor', _from_python)]
    def __init__(self): self.active, self.calls, self.saved = False, [], []
    def _wrap(self, name, f, when):
        def g(*a, **k):
            if self.active and (when is None or when(a, k)):
                fr = sys._getframe(1)
                while fr is not None and fr.f_code.co_filename.startswith(TORCH): fr = fr.f_back
                if fr is not None and fr.f_code.co_filename.startswith(PKG): self.calls.append((name, fr.f_code.co_filename, fr.f_lineno))
            return f(*a, **k)
        return g
    def __enter__(self):
        for owner, name, when in self.NAMES:
            f = getattr(owner, name); self.saved.append((owner, name, owner.__dict__.get(name)))
            setattr(owner, name, self._wrap(name, f, when))
        return self
    def __exit__(self, *exc):
        for owner, name, f in reversed(self.saved):
            if f is None: delattr(owner, name)   # inherited from torch's C base class again
            else: setattr(owner, name, f)
        self.saved = []
    def summary(self)->dict:
        "`{(name, file, line): count}`"
        out = {}
        for name, f, l in self.calls: out[(name, Path(f).name, l)] = out.get((name, Path(f).name, l), 0) + 1
        return out


class Open(Callback):
    "Counting covers training step `i >= 1` (the first builds lazily made state)"
    order = -100
    def __init__(self, counter): self.counter = counter
    def before_batch(self): self.counter.active = self.training and self.iter > 0

class Close(Callback):
    "Counting stops after every callback's `after_batch`, and goes on through the batch transforms of the next training batch"
    order = 1000
    def __init__(self, counter): self.counter = counter
    def after_batch(self): self.counter.active = self.training and self.iter < self.n_iter - 1
    def after_cancel_batch(self): self.counter.active = False
    def after_train(self): self.counter.active = False

def window(c): return [Open(c), Close(c)]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pretrain(cifar, tmp_path, views):
    p = get_preset('smoke', views=views, jitter=(0.4, 0.4, 0.4, 0.1), p_jitter=0.8, p_gray=0.2, blur=True)
    dls = unlabeled_dls(cifar, bs=8, n=48, valid_n=8, device='cpu')
    return pretrain_learner(dls, p, path=tmp_path)

def _supervised(cifar, tmp_path):
    p = get_preset('smoke')
    dls = fold_dls(cifar, 0, 5, 0.02, 42, 16, batch_tfms=preset_train_augs(p), device='cpu')
    return baseline_learner(dls, p, path=tmp_path)

def _count(learn, tmp_path, *cbs):
    with SyncCounter() as c, learn.no_bar():
        learn.fit(1, cbs=[*window(c), EpochCheckpoint(tmp_path/'ck.pth', every=0), FiniteLossGuard(), *cbs])
    return c


@pytest.mark.parametrize('views', ['joint', 'separate'])
def test_pretrain_step_has_no_sync_from_the_library(cifar, tmp_path, views):
    c = _count(_pretrain(cifar, tmp_path, views), tmp_path)
    assert c.calls == [], c.summary()


def test_supervised_step_has_no_sync_from_the_library(cifar, tmp_path):
    c = _count(_supervised(cifar, tmp_path), tmp_path)
    assert c.calls == [], c.summary()


def _as_package(f, mod):
    "`f` made to look as if it were written in the module `mod` of the package"
    f.__code__ = f.__code__.replace(co_filename=mod.__file__)
    return f

def test_the_counter_sees_a_sync_from_the_library(cifar, tmp_path):
    "The check itself: a callback of this package that calls `.item()` per batch is caught"
    import fastai_simclr.checkpoint as ck
    p = get_preset('smoke')
    learn = pretrain_learner(unlabeled_dls(cifar, bs=8, n=32, valid_n=8, device='cpu'), p, path=tmp_path)
    class ItemPerBatch(Callback):
        def after_batch(self): self.learn.loss.detach().item()
    _as_package(ItemPerBatch.after_batch, ck)
    with SyncCounter() as c, learn.no_bar(): learn.fit(1, cbs=[*window(c), ItemPerBatch()])
    assert [name for name, *_ in c.calls] == ['item'] * (len(learn.dls.train) - 1)


def test_the_counter_sees_each_kind_of_sync(cifar, tmp_path):
    "Each newly counted kind, made once per step by a callback of the package, is caught once per counted step"
    import fastai_simclr.checkpoint as ck
    def step(self):
        l = self.learn.loss.detach()
        int(l); float(l); bool(l > 0)
        x = self.learn.xb[0]
        x[x > 0.5]
        torch.tensor([1., 2.], device=x.device); torch.as_tensor((0.5,), device=x.device)
        torch.as_tensor(l, device=x.device)   # a tensor already: not counted
    Step = type('Step', (Callback,), {'after_batch': _as_package(step, ck)})
    learn = _supervised(cifar, tmp_path)
    c = _count(learn, tmp_path, Step())
    per_step = ['__int__', '__float__', '__bool__', '__getitem__', 'tensor', 'as_tensor']
    assert [name for name, *_ in c.calls] == per_step * (len(learn.dls.train) - 1), c.summary()


def test_the_counter_sees_the_batch_transforms(cifar, tmp_path):
    "A batch transform of the package that reads the host is caught for every training batch after the first"
    from fastai.vision.all import Transform, TensorImage
    import fastai_simclr.augment as aug
    def host_read(x): x.sum().item(); return x
    _as_package(host_read, aug)
    class HostRead(Transform):
        order = 99
        def encodes(self, x:TensorImage): return host_read(x)
    learn = _supervised(cifar, tmp_path)
    learn.dls.train.after_batch.add(HostRead(split_idx=0))
    c = _count(learn, tmp_path)
    assert [name for name, *_ in c.calls] == ['item'] * (len(learn.dls.train) - 1), c.summary()
