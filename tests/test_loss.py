"NT-Xent against the paper's formula, limits, stability, mixed precision, errors and the gather interface"
import math, pytest, torch
import torch.nn.functional as F
from fastai_simclr.loss import *
from fastai_simclr.test_utils import ref_nt_xent


@pytest.mark.parametrize('n', [2, 3, 8])
@pytest.mark.parametrize('t', [0.1, 0.5, 2.0])
def test_matches_reference_values_and_grads(n, t):
    torch.manual_seed(n)
    z1, z2 = torch.randn(n, 12, requires_grad=True), torch.randn(n, 12, requires_grad=True)
    r1, r2 = [z.detach().double().requires_grad_() for z in (z1, z2)]
    l, r = nt_xent(z1, z2, t), ref_nt_xent(r1, r2, t)
    torch.testing.assert_close(l.double(), r, rtol=1e-5, atol=1e-6)
    l.backward(); r.backward()
    torch.testing.assert_close(z1.grad.double(), r1.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(z2.grad.double(), r2.grad, rtol=1e-4, atol=1e-6)

def test_loss_class_and_reductions():
    z1, z2 = torch.randn(6, 8), torch.randn(6, 8)
    pred = torch.cat([z1, z2])
    ref = ref_nt_xent(z1, z2, 0.3).float()
    lf = NTXentLoss(0.3)
    torch.testing.assert_close(lf(pred), ref)
    torch.testing.assert_close(lf(pred, torch.arange(12)), ref)     # targets are ignored
    lf.reduction = 'none'
    assert lf(pred).shape == (12,)
    torch.testing.assert_close(lf(pred).mean(), ref)
    torch.testing.assert_close(NTXentLoss(0.3, reduction='sum')(pred), ref * 12)
    torch.testing.assert_close(lf.activation(pred).norm(dim=1), torch.ones(12))
    assert lf.decodes(torch.cat([z1, z1])).tolist() == [6,7,8,9,10,11,0,1,2,3,4,5]

def test_logits_layout():
    logits, targets = nt_xent_logits(torch.randn(4, 5), torch.randn(4, 5), 0.5)
    assert logits.shape == (8, 8) and logits.dtype == torch.float32
    assert targets.tolist() == [4, 5, 6, 7, 0, 1, 2, 3]
    assert torch.isneginf(logits.diagonal()).all()
    assert torch.isfinite(logits[~torch.eye(8, dtype=torch.bool)]).all()

def test_identical_separated_pairs_give_minimum():
    z = torch.eye(10) * 3
    assert nt_xent(z, z, 0.05) < 1e-6
    for t in [0.1, 0.5]:   # exact: partner sim 1, the other 2N-2 = 18 orthogonal (sim 0)
        expected = -math.log(math.exp(1/t) / (math.exp(1/t) + 18))
        assert abs(nt_xent(z, z, t).item() - expected) < 1e-5
    assert contrastive_accuracy(torch.cat([z, z])).item() == 1.

@pytest.mark.parametrize('n', [16, 64])
def test_random_high_dim_is_log_2n_minus_1(n):
    torch.manual_seed(0)
    l = nt_xent(torch.randn(n, 8192), torch.randn(n, 8192), 0.5)
    assert abs(l.item() - math.log(2*n - 1)) < 0.02

def test_stable_low_temperature_and_huge_or_tiny_norms():
    torch.manual_seed(0)
    z1, z2 = torch.randn(32, 64), torch.randn(32, 64)
    base = nt_xent(z1, z2, 0.05)
    assert torch.isfinite(base)
    torch.testing.assert_close(base.double(), ref_nt_xent(z1, z2, 0.05), rtol=1e-4, atol=1e-4)
    for s in [1e6, 1e-6]:
        a, b = (z1 * s).requires_grad_(), (z2 * s).requires_grad_()
        l = nt_xent(a, b, 0.05)
        torch.testing.assert_close(l, base, rtol=1e-4, atol=1e-4)
        l.backward()
        assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    assert torch.isfinite(nt_xent(torch.zeros(4, 8), torch.randn(4, 8)))   # a zero embedding does not give nan

@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_cpu_computes_in_float32(dtype):
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 32)
    x1, x2 = torch.randn(8, 16), torch.randn(8, 16)
    with torch.autocast('cpu', dtype=dtype):
        z1, z2 = lin(x1), lin(x2)
        assert z1.dtype == dtype
        l = nt_xent(z1, z2, 0.05)
        acc = contrastive_accuracy(torch.cat([z1, z2]))
    assert l.dtype == torch.float32 and torch.isfinite(l)
    torch.testing.assert_close(l, nt_xent(z1.float(), z2.float(), 0.05))
    l.backward()
    assert torch.isfinite(lin.weight.grad).all()
    assert 0 <= acc.item() <= 1

def test_errors():
    with pytest.raises(ValueError, match='same shape'): nt_xent(torch.randn(4, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match='same shape'): nt_xent(torch.randn(4, 8), torch.randn(4, 9))
    with pytest.raises(ValueError, match='2-d'): nt_xent(torch.randn(4, 8, 2), torch.randn(4, 8, 2))
    with pytest.raises(ValueError, match='one pair has no negatives'): nt_xent(torch.randn(1, 8), torch.randn(1, 8))
    for t in [0, -0.5]:
        with pytest.raises(ValueError, match='temperature must be > 0'): nt_xent(torch.randn(4, 8), torch.randn(4, 8), t)
        with pytest.raises(ValueError, match='temperature must be > 0'): NTXentLoss(t)
    with pytest.raises(ValueError, match='even number of rows'): NTXentLoss()(torch.randn(7, 8))
    with pytest.raises(ValueError, match='even number of rows'): contrastive_accuracy(torch.randn(7, 8))
    with pytest.raises(ValueError, match=r'\(2N, d\)'): NTXentLoss()(torch.randn(8))

def fake_gather(full1, full2, start):
    "What an all-gather with autograd would return for the process owning pairs `start:start+n`"
    def gather(z1n, z2n):
        n = len(z1n)
        Z1n, Z2n = F.normalize(full1, dim=1), F.normalize(full2, dim=1)
        Z1 = torch.cat([Z1n[:start].detach(), z1n, Z1n[start+n:].detach()])
        Z2 = torch.cat([Z2n[:start].detach(), z2n, Z2n[start+n:].detach()])
        return Z1, Z2, start
    return gather

@pytest.mark.parametrize('sizes', [(3, 5), (2, 2, 4)])
def test_gather_interface_matches_global_batch(sizes):
    torch.manual_seed(1)
    m = sum(sizes)
    z1, z2 = torch.randn(m, 16, requires_grad=True), torch.randn(m, 16, requires_grad=True)
    glob = nt_xent(z1, z2, 0.2)
    glob.backward()
    g1, g2 = z1.grad.clone(), z2.grad.clone()
    z1.grad = z2.grad = None
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    total = 0.
    for s, n in zip(starts, sizes):
        local = nt_xent(z1[s:s+n], z2[s:s+n], 0.2, gather=fake_gather(z1.detach(), z2.detach(), s))
        logits, targets = nt_xent_logits(z1[s:s+n], z2[s:s+n], 0.2, gather=fake_gather(z1.detach(), z2.detach(), s))
        assert logits.shape == (2*n, 2*m)
        assert targets.tolist() == [m+s+i for i in range(n)] + [s+i for i in range(n)]
        assert torch.isneginf(logits[torch.arange(2*n), torch.cat([s+torch.arange(n), m+s+torch.arange(n)])]).all()
        total = total + local * n / m       # each process' mean, weighted by its share of the anchors
    torch.testing.assert_close(total, glob)
    # the global loss' gradient w.r.t. the local rows: anchors' own terms + their use as others' negatives;
    # a detaching gather gives only the anchor part, so compare the full gradient via an autograd gather
    def autograd_gather(s):
        def g(z1n, z2n):
            n = len(z1n)
            Z1n, Z2n = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
            return torch.cat([Z1n[:s], z1n, Z1n[s+n:]]), torch.cat([Z2n[:s], z2n, Z2n[s+n:]]), s
        return g
    total = sum(nt_xent(z1[s:s+n], z2[s:s+n], 0.2, gather=autograd_gather(s)) * n / m for s, n in zip(starts, sizes))
    total.backward()
    torch.testing.assert_close(z1.grad, g1); torch.testing.assert_close(z2.grad, g2)

def test_gather_single_local_pair_allowed_and_bad_gather():
    z1, z2 = torch.randn(4, 8), torch.randn(4, 8)
    l = nt_xent(z1[1:2], z2[1:2], 0.5, gather=fake_gather(z1, z2, 1))      # one local pair, negatives from others
    assert torch.isfinite(l)
    with pytest.raises(ValueError, match='start'): nt_xent(z1[:2], z2[:2], gather=lambda a, b: (a, b, 1))
    with pytest.raises(ValueError, match='gather returned'): nt_xent(z1[:2], z2[:2], gather=lambda a, b: (a, b[:1], 0))

def test_contrastive_accuracy():
    z = torch.randn(5, 64)
    assert contrastive_accuracy(torch.cat([z, z + 0.01 * torch.randn(5, 64)])).item() == 1.
    z1 = torch.eye(4)
    z2 = torch.eye(4)[[1, 0, 2, 3]]       # pairs 0 and 1 swapped: 4 of the 8 anchors find their partner
    assert contrastive_accuracy(torch.cat([z1, z2])).item() == 0.5
