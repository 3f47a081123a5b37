"`TorchAdam` under fastai's `Learner`: equality with `torch.optim.Adam`, wd, schedules, groups, freeze, save/load"
import pytest, torch
from torch import nn
from fastai.basics import Learner, DataLoaders
from fastai.data.load import DataLoader as FaDL
from fastai_simclr.optim import TorchAdam
from fastai_simclr.schedules import ExpDecayLR, StepLR
from fastai_simclr.test_utils import tiny_mlp, synth_vectors, synth_vector_dls

N, BS = 64, 16
XS, YS = synth_vectors(N)
tiny_model = tiny_mlp

def split2(m): return [list(m[0].parameters()), list(m[1].parameters()) + list(m[3].parameters())]

def mk_learner(path=None, model=None, **kwargs):
    dls = synth_vector_dls(XS, YS, BS)
    return Learner(dls, model or tiny_model(), loss_func=nn.CrossEntropyLoss(), opt_func=TorchAdam, path=path or '.', **kwargs)

def torch_loop(n_epoch, lr_at, wd, groups=False, model=None):
    m = model or tiny_model(); m.train()
    opt = torch.optim.Adam([{'params': p} for p in split2(m)] if groups else m.parameters(), lr=lr_at(0), weight_decay=wd)
    for e in range(n_epoch):
        for pg in opt.param_groups: pg['lr'] = lr_at(e)
        for i in range(0, N, BS):
            nn.functional.cross_entropy(m(XS[i:i+BS]), YS[i:i+BS]).backward()
            opt.step(); opt.zero_grad()
    return m

def assert_params_close(m1, m2, tol=1e-6):
    for (n, p), q in zip(m1.named_parameters(), m2.parameters()): assert torch.allclose(p, q, atol=tol, rtol=0), n
    for b1, b2 in zip(m1.buffers(), m2.buffers()): assert torch.allclose(b1.float(), b2.float(), atol=tol)

@pytest.mark.parametrize('groups', [False, True])
@pytest.mark.parametrize('sched', [ExpDecayLR(lr=1e-2, gamma=0.9, gamma_after=0.5, switch_epoch=2), StepLR(lr=5e-3, step_size=2, gamma=0.3)])
def test_matches_torch_adam_under_fit(groups, sched):
    learn = mk_learner(wd=1e-6, splitter=split2) if groups else mk_learner(wd=1e-6)
    learn.fit(5, cbs=sched)
    ref = torch_loop(5, sched.lr_at, 1e-6, groups=groups)
    assert_params_close(learn.model, ref)
    assert isinstance(learn.opt.opt, torch.optim.Adam) and len(learn.opt.opt.param_groups) == (2 if groups else 1)
    assert all(pg['weight_decay'] == 1e-6 and pg['lr'] == sched.lr_at(4) for pg in learn.opt.opt.param_groups)
    assert all(pg['betas'] == (0.9, 0.999) and pg['eps'] == 1e-8 for pg in learn.opt.opt.param_groups)

def test_weight_decay_is_l2_and_reaches_torch():
    "With wd the result differs from no wd, and equals PyTorch's L2 (not its decoupled AdamW) for every parameter"
    lr_at = lambda e: 1e-2
    learn = mk_learner(wd=1e-1); learn.fit(2, lr=1e-2)
    assert_params_close(learn.model, torch_loop(2, lr_at, 1e-1))
    assert not all(torch.allclose(p, q, atol=1e-6) for p, q in zip(learn.model.parameters(), torch_loop(2, lr_at, 0.).parameters()))
    # bias and batch-norm parameters are decayed too, as in PyTorch (Learner's `wd_bn_bias=False` does not apply):
    # a PyTorch run that exempts them ends with a different batch-norm weight
    m = tiny_model(); m.train()
    decay = [m[0].weight, m[3].weight]; no_decay = [m[0].bias, m[1].weight, m[1].bias, m[3].bias]
    opt = torch.optim.Adam([{'params': decay}, {'params': no_decay, 'weight_decay': 0.}], lr=1e-2, weight_decay=1e-1)
    for _ in range(2):
        for i in range(0, N, BS):
            nn.functional.cross_entropy(m(XS[i:i+BS]), YS[i:i+BS]).backward(); opt.step(); opt.zero_grad()
    assert not torch.allclose(learn.model[1].weight, m[1].weight, atol=1e-4)

def test_decoupled_matches_adamw():
    dls = synth_vector_dls(XS, YS, BS)
    from functools import partial
    learn = Learner(dls, tiny_model(), loss_func=nn.CrossEntropyLoss(), opt_func=partial(TorchAdam, decouple_wd=True), wd=1e-1)
    learn.fit(2, lr=1e-2)
    m = tiny_model(); m.train(); opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=1e-1)
    for _ in range(2):
        for i in range(0, N, BS):
            nn.functional.cross_entropy(m(XS[i:i+BS]), YS[i:i+BS]).backward(); opt.step(); opt.zero_grad()
    assert_params_close(learn.model, m)

def test_fit_lr_and_discriminative_lrs_reach_torch():
    learn = mk_learner(splitter=split2)
    learn.fit(1, lr=slice(1e-4, 1e-2))
    assert [pg['lr'] for pg in learn.opt.opt.param_groups] == [1e-4, 1e-2]
    learn.fit(1, lr=3e-3)
    assert [pg['lr'] for pg in learn.opt.opt.param_groups] == [3e-3, 3e-3]

def test_freeze_unfreeze():
    learn = mk_learner(splitter=split2)
    learn.freeze()
    w0 = learn.model[0].weight.detach().clone(); w3 = learn.model[3].weight.detach().clone()
    learn.fit(1, lr=1e-2)
    assert torch.equal(learn.model[0].weight, w0)        # frozen group untouched
    assert not torch.allclose(learn.model[3].weight, w3)  # last group trained
    learn.unfreeze(); learn.fit(1, lr=1e-2)
    assert not torch.allclose(learn.model[0].weight, w0)

def test_save_load_restores_optimizer_state(tmp_path):
    sched = lambda: StepLR(lr=1e-2, step_size=2, gamma=0.5)
    full = mk_learner(tmp_path, wd=1e-6); full.fit(4, cbs=sched())
    a = mk_learner(tmp_path, wd=1e-6); a.fit(2, cbs=sched()); a.save('half')
    st = torch.load(tmp_path/'models'/'half.pth', weights_only=False)
    assert set(st) == {'model', 'opt'} and len(st['opt']['state']) == len(list(a.model.parameters()))
    b = mk_learner(tmp_path, model=tiny_model(seed=7), wd=1e-6); b.load('half')
    assert len(b.opt.opt.state) == len(list(b.model.parameters()))
    b.fit(4, cbs=sched(), start_epoch=2)
    assert_params_close(b.model, full.model)
    # without the optimizer state (fresh Adam moments) the resumed run differs: the state is what made it equal
    c = mk_learner(tmp_path, model=tiny_model(seed=7), wd=1e-6); c.load('half', with_opt=False)
    c.fit(4, cbs=sched(), start_epoch=2)
    assert not all(torch.allclose(p, q, atol=1e-6) for p, q in zip(c.model.parameters(), full.model.parameters()))

def test_hyper_names_map_to_torch():
    o = TorchAdam(tiny_model().parameters(), lr=3e-4, wd=1e-4)
    o.set_hypers(mom=0.8, sqr_mom=0.99, lr=1e-3)
    pg = o.opt.param_groups[0]
    assert (pg['betas'], pg['lr'], pg['weight_decay']) == ((0.8, 0.99), 1e-3, 1e-4)
    assert o.hypers[0]['wd'] == 1e-4

@pytest.mark.parametrize('kw,word', [({'lr': -1e-3}, 'lr'), ({'eps': -1.}, 'eps'), ({'wd': -1e-6}, 'wd'),
    ({'betas': (0.9, 1.0)}, r'betas\[1\]'), ({'betas': (-0.1, 0.9)}, r'betas\[0\]'), ({'betas': 0.9}, 'betas'),
    ({'weight_decay': 1e-6}, 'wd'), ({'lr': 'a'}, 'lr')])
def test_bad_args(kw, word):
    with pytest.raises(ValueError, match=word): TorchAdam(tiny_model().parameters(), **kw)


# ---------------------------------------------------------------- the fused kernel (the default on CUDA)

@pytest.fixture
def fused_calls(monkeypatch):
    "Every call of PyTorch's fused Adam kernel, counted"
    import torch.optim.adam as A
    calls, f = [], A._fused_adam
    def counted(*a, **k): calls.append(len(a[0])); return f(*a, **k)
    monkeypatch.setattr(A, '_fused_adam', counted)
    return calls

def fused_on_cpu(monkeypatch):
    "Make `TorchAdam(fused=None)` choose the fused kernel on the CPU, as it does on CUDA"
    import fastai_simclr.optim as O
    monkeypatch.setattr(O, 'FUSED_DEVICES', ('cpu',))

SCHED = ExpDecayLR(lr=1e-2, gamma=0.9, gamma_after=0.5, switch_epoch=2)

@pytest.mark.parametrize('groups', [False, True])
def test_fused_default_matches_torch_adam(monkeypatch, fused_calls, groups):
    "Where `fused=None` picks the fused kernel (CUDA; here the CPU), 5 epochs with wd, a schedule and one or two groups end as torch.optim.Adam's"
    fused_on_cpu(monkeypatch)
    learn = mk_learner(wd=1e-2, splitter=split2) if groups else mk_learner(wd=1e-2)
    learn.fit(5, cbs=SCHED)
    assert len(fused_calls) == 5 * (N // BS) * (2 if groups else 1)   # every step of every group
    assert_params_close(learn.model, torch_loop(5, SCHED.lr_at, 1e-2, groups=groups), tol=1e-5)
    assert all(pg['fused'] is None for pg in learn.opt.opt.param_groups)   # not recorded: the choice follows the device
    assert all(pg['fused'] is None for pg in learn.opt.state_dict()['param_groups'])

def test_fused_default_is_off_on_the_cpu(fused_calls):
    "On the CPU `fused=None` keeps PyTorch's default kernel: the fused one is never called and the result is torch.optim.Adam's to the bit"
    learn = mk_learner(wd=1e-2); learn.fit(2, cbs=SCHED)
    assert fused_calls == []
    for p, q in zip(learn.model.parameters(), torch_loop(2, SCHED.lr_at, 1e-2).parameters()): assert torch.equal(p, q)

@pytest.mark.parametrize('kw', [dict(fused=True), dict(foreach=True)])
def test_fused_and_foreach_match_torch_adam(fused_calls, kw):
    from functools import partial
    learn = Learner(synth_vector_dls(XS, YS, BS), tiny_model(), loss_func=nn.CrossEntropyLoss(), opt_func=partial(TorchAdam, **kw),
                    wd=1e-2, splitter=split2)
    learn.fit(3, cbs=SCHED)
    assert len(fused_calls) == (3 * (N // BS) * 2 if kw.get('fused') else 0)
    assert_params_close(learn.model, torch_loop(3, SCHED.lr_at, 1e-2, groups=True), tol=1e-5)

def test_decoupled_keeps_the_default_kernel(monkeypatch, fused_calls):
    "AdamW's fused CPU kernel does not give AdamW's result (torch 2.14), so `decouple_wd` never picks it: the result is AdamW's to the bit"
    fused_on_cpu(monkeypatch)
    from functools import partial
    learn = Learner(synth_vector_dls(XS, YS, BS), tiny_model(), loss_func=nn.CrossEntropyLoss(), opt_func=partial(TorchAdam, decouple_wd=True), wd=1e-1)
    learn.fit(2, lr=1e-2)
    m = tiny_model(); m.train(); opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=1e-1)
    for _ in range(2):
        for i in range(0, N, BS):
            nn.functional.cross_entropy(m(XS[i:i+BS]), YS[i:i+BS]).backward(); opt.step(); opt.zero_grad()
    assert fused_calls == [] and type(learn.opt.opt) is torch.optim.AdamW
    for p, q in zip(learn.model.parameters(), m.parameters()): assert torch.equal(p, q)

def test_fused_state_resumes_unfused(monkeypatch, tmp_path):
    "A fused run's optimizer state loads into a run without it (another device), which goes on as torch.optim.Adam would"
    fused_on_cpu(monkeypatch)
    a = mk_learner(path=tmp_path, wd=1e-2); a.fit(1, lr=1e-2); a.save('a')
    monkeypatch.setattr('fastai_simclr.optim.FUSED_DEVICES', ('cuda',))
    b = mk_learner(path=tmp_path, wd=1e-2); b.create_opt(); b.load('a')
    b.fit(1, lr=1e-2)
    m = torch_loop(2, lambda e: 1e-2, 1e-2)
    assert_params_close(b.model, m, tol=1e-5)

def test_fused_must_be_a_bool_or_none():
    with pytest.raises(ValueError, match='`fused` must be True, False or None'): TorchAdam(tiny_model().parameters(), fused='yes')
