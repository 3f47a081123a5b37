"""bf16 does not hurt learning: on real CIFAR-10, float32 and bf16 runs from one seed stay closer than runs from two seeds.

`bf16_parity` trains the same run in float32 and in bf16 from one seed (same weights, batches and views: only the arithmetic
differs), and in bf16 from a second seed. The tolerance is the second seed's spread: a precision effect smaller than what
changing the seed does cannot matter to a user. The long runs are saved in `nbs/13_speed.ipynb`; these are small ones."""
import pytest
from fastai_simclr.speed import bf16_parity

@pytest.mark.parametrize('kind,n', [('pretrain', 256), ('baseline', 320)])
def test_bf16_changes_less_than_the_seed(cifar, kind, n):
    r = bf16_parity(cifar, kind, n=n, epochs=2, bs=32, eval_n=(256, 128))
    f, b = r['runs']['float32'], r['runs']['bf16']
    assert r['steps'] == 2 * ((n if kind == 'pretrain' else n * 4 // 5) // 32)
    assert f['batch_loss'] != b['batch_loss']   # bf16 did run: the arithmetic differs
    # the first step: same weights and views, so only bf16's rounding (2**-8 = 0.4% per value, averaged over the batch)
    assert r['first_loss_rel_diff'] < 1e-2, r['first_loss_rel_diff']
    # the curves: bf16 moves every epoch's mean loss less than a second seed does
    assert r['loss_gap'] < r['loss_spread'], (r['loss_gap'], r['loss_spread'])
    # both learn: the loss falls from the first epoch to the second in both precisions
    assert f['epoch_loss'][-1] < f['epoch_loss'][0] and b['epoch_loss'][-1] < b['epoch_loss'][0]
