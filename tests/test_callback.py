"SimCLRCallback under fit/fit_one_cycle/lr_find/validate/get_preds/bf16 on tiny synthetic data"
import math, pytest, torch
from torch import nn
from fastai.basics import Learner, Callback, CancelFitException, AvgMetric, accuracy
from fastai.data.core import TfmdDL, DataLoaders
from fastai.vision.all import TensorImage, TensorCategory, IntToFloatTensor, Normalize
from fastai_simclr.callback import SimCLRCallback
from fastai_simclr.loss import NTXentLoss, nt_xent
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

@pytest.mark.parametrize('labeled', [False, True])
def test_fit_records_and_restores(labeled):
    lf, mets = NTXentLoss(0.1), [AvgMetric(lambda p, *y: torch.tensor(0.))]
    learn = Learner(synth_dls(labeled=labeled), tiny_model(), loss_func=lf, metrics=mets)
    cb, spy = SimCLRCallback(temperature=0.5), Spy()
    learn.fit(2, 1e-3, cbs=[cb, spy])
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
    assert cb.loss.temperature == 0.5

def test_loss_is_nt_xent_of_the_two_halves():
    learn = Learner(synth_dls(), tiny_model(), loss_func=NTXentLoss())
    spy = Spy()
    learn.validate(cbs=[SimCLRCallback(temperature=0.2), spy])
    learn.model.eval()
    with torch.no_grad(): z = learn.model(spy.xs[0])
    assert abs(nt_xent(*z.chunk(2), 0.2).item() - spy.losses[0]) < 1e-5

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
