"""bf16 does not hurt learning: on real CIFAR-10, bf16 shifts the loss curves and accuracies no more than a change of seed does.

`bf16_parity` trains the same run from two seeds, each in float32 and in bf16 (same weights, batches and views for a seed:
only the arithmetic differs). The tolerance is the spread between the seeds in one precision: a precision effect no larger
than what changing the seed does cannot matter to a user. The long runs are saved in `nbs/13_speed.ipynb`; these are small."""
import pytest
from fastai_simclr.speed import bf16_parity, bf16_grad_check, bf16_skip_reason

# bf16 measurements: on a CPU without native bf16 they would measure an emulation, many times slower than float32
pytestmark = pytest.mark.skipif(bf16_skip_reason('cpu') is not None, reason=str(bf16_skip_reason('cpu')))

@pytest.mark.parametrize('kind,n', [('pretrain', 256), ('baseline', 320)])
def test_bf16_changes_less_than_the_seed(cifar, kind, n):
    r = bf16_parity(cifar, kind, n=n, epochs=2, bs=32, eval_n=(256, 128))
    f, b = r['runs']['float32, seed 42'], r['runs']['bf16, seed 42']
    assert r['steps'] == 2 * ((n if kind == 'pretrain' else n * 4 // 5) // 32)
    assert f['batch_loss'] != b['batch_loss']   # bf16 did run: the arithmetic differs
    if kind == 'pretrain':   # a seed's two runs start from the same weights: the untrained encoder's k-NN accuracy is the same
        assert f['acc_init'] == b['acc_init'], (f['acc_init'], b['acc_init'])
    # the first step: same weights and views, so only bf16's rounding (2**-8 = 0.4% per value, averaged over the batch)
    assert r['first_loss_rel_diff'] < 1e-2, r['first_loss_rel_diff']
    # training is chaotic: within a few steps the rounding grows until one seed's two runs differ like two seeds' runs. What
    # must not happen is a systematic shift: the precisions' mean curves over the seeds differ no more than the seeds do
    assert r['loss_bias'] <= r['loss_spread'], (r['loss_bias'], r['loss_spread'])
    assert abs(r['acc_bf16'] - r['acc_float32']) <= r['acc_spread'], r
    # both learn: the loss falls from the first epoch to the second in both precisions
    assert f['epoch_loss'][-1] < f['epoch_loss'][0] and b['epoch_loss'][-1] < b['epoch_loss'][0]

@pytest.mark.parametrize('kind,n', [('pretrain', 128), ('baseline', 200)])
def test_bf16_gradient_error_is_below_the_batch_noise(cifar, kind, n):
    "One step, same weights and batch: bf16 moves the gradient much less than the previous batch's gradient differs from it"
    rows = bf16_grad_check(cifar, kind, n=n, epochs=1, bs=16, every=2)
    steps = (n if kind == 'pretrain' else n * 4 // 5) // 16          # a fifth of the baseline's images is held out
    assert [r['step'] for r in rows] == list(range(2, steps, 2))       # step 0 has no previous batch
    for r in rows:
        assert r['loss_rel'] < 1e-2, r
        # measured at batch 16 on this CPU: bf16 0.06-0.25 of the gradient's norm, another batch 1.2-3.9 times it
        assert r['rel_bf16'] < r['rel_batch'] / 2, r
        assert r['cos_bf16'] > 0.9 > r['cos_batch'], r
