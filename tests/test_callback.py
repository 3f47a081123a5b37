"SimCLRCallback under fit/fit_one_cycle/lr_find/validate/get_preds/bf16 on tiny synthetic data"
import math, pytest, torch
from torch import nn
import torch.nn.functional as F
from fastai.basics import set_seed, Learner, Callback, CancelFitException, AvgMetric, accuracy, CrossEntropyLossFlat
from fastai.data.core import TfmdDL, DataLoaders
from fastai.vision.all import TensorImage, TensorCategory, IntToFloatTensor, Normalize
from fastai_simclr.callback import SimCLRCallback
from fastai_simclr.loss import NTXentLoss, nt_xent, two_view_loss
from fastai_simclr.model import create_simclr_model
from fastai_simclr.test_utils import tiny_simclr_model as tiny_model, synth_image_dls as synth_dls

from fastai_simclr.utils import CIFAR_STATS as STATS

@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads(); torch.set_num_threads(1); torch.manual_seed(0)
    yield
    torch.set_num_threads(n)

class Spy(Callback):
    "Record what the model gets, after `SimCLRCallback.before_batch`"
    order = 5
    def before_fit(self): self.xs, self.ys, self.losses = [], [], []
    def before_batch(self): self.xs.append(self.xb[0].detach().clone()); self.ys.append(self.yb)
    def after_loss(self):
        if len(self.yb): self.losses.append(self.learn.loss.item())

class LossSpy(Callback):
    "The loss function the learner trains with"
    order = 5
    def before_batch(self): self.lf = self.learn.loss_func

@pytest.mark.parametrize('labeled', [False, True])
def test_fit_records_and_restores(labeled):
    lf, mets = NTXentLoss(0.1), [AvgMetric(lambda p, *y: torch.tensor(0.))]
    learn = Learner(synth_dls(labeled=labeled), tiny_model(), loss_func=lf, metrics=mets)
    cb, spy, lspy = SimCLRCallback(), Spy(), LossSpy()
    learn.fit(2, 1e-3, cbs=[cb, spy, lspy])
    assert lspy.lf is lf                               # the learner's two-view loss is the one trained with
    assert learn.loss_func is lf and list(learn.metrics) == mets
    assert learn.recorder.metric_names[-2] == 'contrastive_accuracy'
    assert len(learn.recorder.values) == 2
    for v in learn.recorder.values:
        assert all(math.isfinite(o) for o in v)
        assert 0 <= v[-1] <= 1
    assert all(math.isfinite(l) for l in spy.losses) and len(spy.losses) == 2 * (2 + 2)
    x, (y,) = spy.xs[0], spy.ys[0]
    assert x.shape == (32, 3, 32, 32) and isinstance(x, TensorImage)
    assert y.tolist() == list(range(16, 32)) + list(range(16))
    assert (cb.labels is not None) == labeled

def test_classification_loss_swapped_for_the_fit_and_restored():
    ce = CrossEntropyLossFlat()
    learn = Learner(synth_dls(labeled=True), tiny_model(), loss_func=ce)
    lspy = LossSpy()
    learn.fit(1, 1e-3, cbs=[SimCLRCallback(), lspy])
    assert isinstance(lspy.lf, NTXentLoss) and lspy.lf.temperature == 0.5 and learn.loss_func is ce
    mine = NTXentLoss(0.3)                             # the callback's own loss wins over the learner's
    learn.fit(1, 1e-3, cbs=[SimCLRCallback(loss_func=mine), lspy])
    assert lspy.lf is mine and learn.loss_func is ce
    preds, targs, losses = learn.get_preds(with_loss=True, reorder=False, cbs=SimCLRCallback())
    assert losses.shape == (64,) and torch.isfinite(losses).all() and learn.loss_func is ce
    with pytest.raises(TypeError, match='loss_func must be callable'): SimCLRCallback(loss_func=0.5)
    with pytest.raises(TypeError, match=r'temperature belongs to the loss now.*NTXentLoss\(temperature=\.\.\.\)'): SimCLRCallback(temperature=0.2)
    with pytest.raises(TypeError, match='unexpected arguments: tau'): SimCLRCallback(tau=0.2)

@two_view_loss
def info_nce(pred, *yb, temperature=0.2):
    "A user's two-view loss: one-directional InfoNCE, first views against second views"
    z1, z2 = F.normalize(pred.float(), dim=1).chunk(2)
    return F.cross_entropy(z1 @ z2.T / temperature, torch.arange(len(z1), device=z1.device))

def test_user_two_view_loss_trains():
    for how in ('learner', 'callback'):
        learn = Learner(synth_dls(), tiny_model(), loss_func=info_nce if how == 'learner' else CrossEntropyLossFlat())
        spy, lspy = Spy(), LossSpy()
        p0 = [p.detach().clone() for p in learn.model.parameters()]
        learn.fit(1, 1e-2, cbs=[SimCLRCallback(loss_func=info_nce if how == 'callback' else None), spy, lspy])
        assert lspy.lf is info_nce
        learn.model.eval()
        with torch.no_grad(): z = learn.model(spy.xs[-1])
        assert abs(info_nce(z).item() - spy.losses[-1]) < 1e-5       # the recorded loss is the user's
        assert any(not torch.equal(a, b) for a, b in zip(p0, learn.model.parameters()))

def test_normalize_lifted_for_the_fit_and_once():
    "The DataLoaders' Normalize is taken out during the fit (views end with it) and put back after"
    dls = synth_dls()
    class Probe(Callback):
        order = 5
        def before_batch(self): self.norms = [any(isinstance(t, Normalize) for t in dl.after_batch.fs) for dl in self.dls.loaders]
    probe = Probe()
    learn = Learner(dls, tiny_model(), loss_func=NTXentLoss())
    learn.fit(1, 1e-3, cbs=[SimCLRCallback(augs=[]), probe, Spy()])
    assert probe.norms == [False, False]
    assert all(any(isinstance(t, Normalize) for t in dl.after_batch.fs) for dl in dls.loaders)

def test_same_losses_with_or_without_normalize_in_the_dataloaders():
    "Normalize in the DataLoaders, or given to the callback: the same views and losses, within float tolerance"
    losses = []
    for normalized in (True, False):
        set_seed(0)                                    # python's random too: fastai's shuffling draws from it
        learn = Learner(synth_dls(normalize=normalized), tiny_model(), loss_func=NTXentLoss())
        spy = Spy()
        set_seed(1)
        learn.fit(1, 0., cbs=[SimCLRCallback(stats=None if normalized else STATS), spy])
        losses.append(torch.tensor(spy.losses))
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=0)

def test_restored_after_cancelled_fit():
    class Cancel(Callback):
        order = 60
        def after_batch(self): raise CancelFitException()
    lf = NTXentLoss()
    learn = Learner(synth_dls(), tiny_model(), loss_func=lf, metrics=accuracy)
    mets = learn.metrics
    learn.fit(1, cbs=[SimCLRCallback(), Cancel()])
    assert learn.loss_func is lf and list(learn.metrics) == list(mets) and len(mets) == 1

def test_views_undo_and_redo_normalize():
    x = torch.rand(8, 3, 32, 32)
    m, s = torch.tensor(STATS[0]).view(1, 3, 1, 1), torch.tensor(STATS[1]).view(1, 3, 1, 1)
    learn = Learner(synth_dls(), tiny_model(), loss_func=NTXentLoss())
    cb = SimCLRCallback(augs=[])                       # identity: views are the images themselves
    learn.add_cb(cb)
    v = cb.views(TensorImage((x - m) / s))
    torch.testing.assert_close(v.as_subclass(torch.Tensor), torch.cat([(x - m) / s] * 2), atol=1e-5, rtol=0)
    cb2 = SimCLRCallback()
    Learner(synth_dls(normalize=False), tiny_model(), loss_func=NTXentLoss(), cbs=cb2)
    v2 = cb2.views(TensorImage(x))                     # no Normalize: views stay in [0,1]
    assert v2.min() >= 0 and v2.max() <= 1 and not torch.equal(v2[:8], v2[8:])

def test_one_cycle_lr_find_validate_get_preds(tmp_path):
    lf = NTXentLoss()
    learn = Learner(synth_dls(n_valid=33), tiny_model(), loss_func=lf, cbs=SimCLRCallback(), path=tmp_path)
    learn.fit_one_cycle(1, 1e-3)
    res = learn.lr_find(num_it=6, show_plot=False)
    assert math.isfinite(res.valley) and learn.loss_func is lf
    loss, acc = learn.validate()                       # last valid batch has one image: skipped, not an error
    assert math.isfinite(loss) and 0 <= acc <= 1 and learn.loss_func is lf
    preds, targs = learn.get_preds(reorder=False)
    assert preds.shape == (2 * 32, 8)                 # both views of the 32 images in full batches
    torch.testing.assert_close(preds.norm(dim=1), torch.ones(64))
    preds, targs, losses = learn.get_preds(with_loss=True, reorder=False)
    assert losses.shape == (64,) and torch.isfinite(losses).all() and learn.loss_func is lf and lf.reduction == 'mean'

def test_bf16_mixed_precision():
    learn = Learner(synth_dls(), tiny_model(), loss_func=NTXentLoss()).to_bf16()
    learn.fit(1, 1e-3, cbs=SimCLRCallback())
    assert all(math.isfinite(o) for o in learn.recorder.values[-1])
    with torch.autocast('cpu', dtype=torch.bfloat16):  # the loss itself under CPU autocast
        z = learn.model(torch.rand(8, 3, 32, 32))
        assert z.dtype == torch.bfloat16
        l = NTXentLoss()(z)
    assert l.dtype == torch.float32 and torch.isfinite(l)
