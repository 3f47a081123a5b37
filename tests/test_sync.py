"""No host synchronisation from this library inside a training step.

On a GPU, `Tensor.item`, `.cpu`, `.tolist`, `torch.nonzero` and `bool(tensor)` make the host wait for the device. Here
(CPU only) they are counted while the batches of a `learn.fit` run, and each call is attributed to the file that made it:
none may come from `fastai_simclr` (fastai's own progress bar is left out with `no_bar`; PyTorch's Adam reads its step
counter on the host by design, a CPU tensor even on a GPU)."""
import sys
from pathlib import Path
import pytest, torch
from fastai.basics import Callback
import fastai_simclr
from fastai_simclr.data import unlabeled_dls, fold_dls
from fastai_simclr.recipes import get_preset, pretrain_learner, baseline_learner, preset_train_augs
from fastai_simclr.checkpoint import EpochCheckpoint, FiniteLossGuard

PKG = str(Path(fastai_simclr.__file__).resolve().parent)


class SyncCounter:
    "Patch the synchronising calls; record the file of our package that made each one while `active`"
    NAMES = [(torch.Tensor, 'item'), (torch.Tensor, 'cpu'), (torch.Tensor, 'tolist'), (torch.Tensor, '__bool__'), (torch, 'nonzero')]
    def __init__(self): self.active, self.calls, self.saved = False, [], []
    def _wrap(self, owner, name, f):
        def g(*a, **k):
            if self.active:
                fr = sys._getframe(1)
                while fr is not None and fr.f_code.co_filename.startswith(str(Path(torch.__file__).parent)): fr = fr.f_back
                if fr is not None and fr.f_code.co_filename.startswith(PKG): self.calls.append((name, fr.f_code.co_filename, fr.f_lineno))
            return f(*a, **k)
        return g
    def __enter__(self):
        for owner, name in self.NAMES:
            f = getattr(owner, name); self.saved.append((owner, name, f)); setattr(owner, name, self._wrap(owner, name, f))
        return self
    def __exit__(self, *exc):
        for owner, name, f in self.saved: setattr(owner, name, f)


class Open(Callback):
    "Counting starts at `before_batch` of every training batch after the first (the first builds lazily made state)"
    order = -100
    def __init__(self, counter): self.counter = counter
    def before_batch(self): self.counter.active = self.training and self.iter > 0

class Close(Callback):
    "Counting stops after every callback's `after_batch`"
    order = 1000
    def __init__(self, counter): self.counter = counter
    def after_batch(self): self.counter.active = False
    def after_cancel_batch(self): self.counter.active = False

def window(c): return [Open(c), Close(c)]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize('views', ['joint', 'separate'])
def test_pretrain_step_has_no_sync_from_the_library(cifar, tmp_path, views):
    p = get_preset('smoke', views=views, jitter=(0.4, 0.4, 0.4, 0.1), p_jitter=0.8, p_gray=0.2, blur=True)
    dls = unlabeled_dls(cifar, bs=8, n=48, valid_n=8, device='cpu')
    learn = pretrain_learner(dls, p, path=tmp_path)
    with SyncCounter() as c, learn.no_bar():
        learn.fit(1, cbs=[*window(c), EpochCheckpoint(tmp_path/'ck.pth'), FiniteLossGuard()])
    assert c.calls == [], c.calls[:10]


def test_supervised_step_has_no_sync_from_the_library(cifar, tmp_path):
    p = get_preset('smoke')
    dls = fold_dls(cifar, 0, 5, 0.02, 42, 16, batch_tfms=preset_train_augs(p), device='cpu')
    learn = baseline_learner(dls, p, path=tmp_path)
    with SyncCounter() as c, learn.no_bar():
        learn.fit(1, cbs=[*window(c), EpochCheckpoint(tmp_path/'ck.pth'), FiniteLossGuard()])
    assert c.calls == [], c.calls[:10]


def test_the_counter_sees_a_sync_from_the_library(cifar, tmp_path):
    "The check itself: a callback of this package that calls `.item()` per batch is caught"
    import fastai_simclr.checkpoint as ck
    p = get_preset('smoke')
    learn = pretrain_learner(unlabeled_dls(cifar, bs=8, n=32, valid_n=8, device='cpu'), p, path=tmp_path)
    class ItemPerBatch(Callback):
        def after_batch(self): self.learn.loss.detach().item()
    # made to look as if it were written in a module of the package
    ItemPerBatch.after_batch.__code__ = ItemPerBatch.after_batch.__code__.replace(co_filename=ck.__file__)
    with SyncCounter() as c, learn.no_bar(): learn.fit(1, cbs=[*window(c), ItemPerBatch()])
    assert [name for name, *_ in c.calls] == ['item'] * (len(learn.dls.train) - 1)
