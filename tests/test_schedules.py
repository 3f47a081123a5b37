"Per-epoch lr schedules: equality with PyTorch's schedulers, behaviour under `Learner.fit` and resumed fits"
import pytest, torch
from torch.optim.lr_scheduler import ExponentialLR, StepLR as TorchStepLR
from fastai.callback.core import Callback
from fastai.test_utils import synth_learner
from fastai_simclr.schedules import ExpDecayLR, StepLR

def torch_rates(n, sched, lr, switch=None, gamma_after=None):
    "Rates of epochs 0..n-1 of a PyTorch scheduler stepped once per epoch; at `switch` a new `ExponentialLR` takes over"
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    s, res = sched(opt), []
    for e in range(n):
        res.append(opt.param_groups[0]['lr'])
        opt.step(); s.step()
        if switch is not None and e+1 == switch: s = ExponentialLR(opt, gamma_after)
    return res

@pytest.mark.parametrize('lr,gamma,gamma_after,switch', [(8e-4, 0.9, 0.6, 15), (1e-2, 0.95, 0.5, 3), (3e-3, 0.7, 0.9, 0), (1e-3, 0.8, 0.8, 100)])
def test_exp_decay_matches_torch(lr, gamma, gamma_after, switch):
    s = ExpDecayLR(lr, gamma, gamma_after, switch)
    mk = lambda o: ExponentialLR(o, gamma if switch > 0 else gamma_after)
    ref = torch_rates(50, mk, lr, switch=switch if switch > 0 else None, gamma_after=gamma_after)
    assert [s.lr_at(e) for e in range(50)] == ref  # bit for bit
    for e in range(50):
        assert s.lr_at(e) == pytest.approx(lr * gamma**min(e, switch) * gamma_after**max(e-switch, 0), rel=1e-12, abs=0)

@pytest.mark.parametrize('lr,step,gamma', [(1e-3, 10, 0.6), (5e-2, 1, 0.9), (2e-4, 7, 0.3)])
def test_step_matches_torch(lr, step, gamma):
    s = StepLR(lr, step, gamma)
    assert [s.lr_at(e) for e in range(50)] == torch_rates(50, lambda o: TorchStepLR(o, step, gamma), lr)
    for e in range(50): assert s.lr_at(e) == pytest.approx(lr * gamma**(e//step), rel=1e-12, abs=0)

def test_defaults():
    s = ExpDecayLR()
    assert (s.lr, s.gamma, s.gamma_after, s.switch_epoch) == (8e-4, 0.9, 0.6, 14)
    assert s.lr_at(14) == pytest.approx(8e-4 * 0.9**14, rel=1e-12)
    assert s.lr_at(15) == pytest.approx(8e-4 * 0.9**14 * 0.6, rel=1e-12)   # the 16th epoch: 1.10e-4, as the original prints
    s = StepLR()
    assert (s.lr, s.step_size, s.gamma) == (1e-3, 10, 0.6)
    assert (s.lr_at(9), s.lr_at(10)) == (1e-3, 1e-3*0.6)

class BatchLRs(Callback):
    order, run_valid = 65, False
    def before_fit(self): self.lrs = []
    def after_batch(self): self.lrs.append((self.epoch, self.opt.hypers[0]['lr'], self.opt.hypers[-1]['lr']))

@pytest.mark.parametrize('sched', [ExpDecayLR(lr=1e-2, switch_epoch=3), StepLR(lr=1e-2, step_size=2, gamma=0.5)])
def test_fit_uses_the_epoch_rate(sched):
    log = BatchLRs()
    learn = synth_learner(n_trn=2, n_val=1, cbs=[sched, log])
    learn.fit(6, lr=0.5)  # the schedule overrides the fit's lr
    assert sched.epochs == list(range(6))
    assert sched.lrs == [sched.lr_at(e) for e in range(6)]
    assert len(log.lrs) == 6*len(learn.dls.train)
    assert all(a == b == sched.lr_at(e) for e, a, b in log.lrs)

def test_resumed_fit_starts_at_its_epoch():
    s, log = ExpDecayLR(), BatchLRs()
    learn = synth_learner(n_trn=1, n_val=1)
    learn.fit(20, cbs=[s, log], start_epoch=12)
    assert s.epochs == list(range(12, 20))
    assert s.lrs[0] == s.lr_at(12) == pytest.approx(8e-4 * 0.9**12, rel=1e-12)
    assert s.lrs[-1] == pytest.approx(8e-4 * 0.9**14 * 0.6**5, rel=1e-12)
    assert log.lrs[0][:2] == (12, s.lr_at(12))  # the first batch trained runs at epoch 12's rate
    # a second, uninterrupted run gives the same rates for those epochs
    s2 = ExpDecayLR(); synth_learner(n_trn=1, n_val=1).fit(20, cbs=s2)
    assert s2.lrs[12:] == s.lrs

def test_param_groups_all_get_the_rate():
    learn = synth_learner(n_trn=1, n_val=1, splitter=lambda m: [[m.a], [m.b]])
    s = StepLR(lr=1e-2, step_size=1, gamma=0.5)
    learn.fit(3, cbs=s)
    assert [h['lr'] for h in learn.opt.hypers] == [s.lr_at(2)]*2

@pytest.mark.parametrize('f,word', [
    (lambda: ExpDecayLR(lr=0), 'lr'), (lambda: ExpDecayLR(lr=-1e-3), 'lr'), (lambda: ExpDecayLR(gamma=0), 'gamma'),
    (lambda: ExpDecayLR(gamma_after=-0.6), 'gamma_after'), (lambda: ExpDecayLR(switch_epoch=-1), 'switch_epoch'),
    (lambda: ExpDecayLR(switch_epoch=1.5), 'switch_epoch'), (lambda: ExpDecayLR(lr='1e-3'), 'lr'),
    (lambda: StepLR(step_size=0), 'step_size'), (lambda: StepLR(gamma=-1), 'gamma'), (lambda: StepLR(lr=float('nan')), 'lr'),
    (lambda: StepLR().lr_at(-1), 'epoch'), (lambda: ExpDecayLR().lr_at(2.0), 'epoch')])
def test_bad_args(f, word):
    with pytest.raises(ValueError, match=word): f()


def original_loop_rates(epochs=20, lr=8e-4):
    """The original baseline/fine-tune loop, transcribed: PyTorch's `ExponentialLR(gamma=0.9)`, its `gamma` set to 0.6
    once `epoch + 1 >= 15`, stepped after each epoch; returns the rate each epoch trained at (one Adam step per epoch)"""
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = ExponentialLR(opt, gamma=0.9)
    rates = []
    for epoch in range(epochs):
        rates.append(opt.param_groups[0]['lr'])
        model(torch.ones(1, 2)).sum().backward(); opt.step()   # train one epoch
        if epoch + 1 >= 15: scheduler.gamma = 0.6
        scheduler.step()
    return rates

def test_original_loop_values():
    r = original_loop_rates()
    assert r[15] == pytest.approx(8e-4 * 0.9**14 * 0.6, rel=1e-12) and f'{r[15]:.3g}' == '0.00011'
    assert r[14] == pytest.approx(8e-4 * 0.9**14, rel=1e-12)
    assert [ExpDecayLR().lr_at(e) for e in range(20)] == r    # bit for bit

def _fit_epoch_rates(start_epoch=0, n=20):
    "The rate every trained epoch ran at in a fastai fit with `ExpDecayLR()` (all batches of an epoch must agree)"
    log = BatchLRs()
    synth_learner(n_trn=2, n_val=1).fit(n, cbs=[ExpDecayLR(), log], start_epoch=start_epoch)
    rates = {}
    for e, a, b in log.lrs:
        assert a == b == rates.setdefault(e, a)
    return rates

@pytest.mark.parametrize('start', [0, 1, 13, 14, 15, 16, 19])
def test_fastai_fit_matches_original_loop(start):
    "A fit, or a fit resumed at `start`, trains each epoch at exactly the original loop's rate"
    orig = original_loop_rates()
    assert _fit_epoch_rates(start) == {e: orig[e] for e in range(start, 20)}
