"Distributed SimCLR on 2 CPU processes (gloo): the gathered NT-Xent equals one process on the whole batch, and a short run under torchrun"
import json, os, socket, subprocess, sys
from pathlib import Path
import pytest, torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP
from fastai_simclr.loss import nt_xent
from fastai_simclr.model import create_simclr_model
from fastai_simclr.distributed import gather_embeddings, all_gather_with_grad

W, N, T = 2, 8, 0.5   # processes, pairs per process, temperature

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

class _LocalSliceGather(torch.autograd.Function):
    "The common bug: all-gather whose backward returns this process' slice of the gradient, without summing over processes"
    @staticmethod
    def forward(ctx, t):
        ctx.r, ctx.n = dist.get_rank(), len(t)
        out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(out, t.contiguous())
        return torch.cat(out)
    @staticmethod
    def backward(ctx, g): return g[ctx.r*ctx.n:(ctx.r+1)*ctx.n]

def naive_gather(z1n, z2n):
    d = z1n.shape[1]
    Z = _LocalSliceGather.apply(torch.cat([z1n, z2n], 1))
    return Z[:, :d], Z[:, d:], dist.get_rank() * len(z1n)

def _model():
    torch.manual_seed(0)
    return create_simclr_model().eval()   # eval: BatchNorm uses its running statistics, the same in every process

def _inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(W*N, 3, 32, 32, generator=g), torch.randn(W*N, 3, 32, 32, generator=g)

def _step(model, x1, x2, gather):
    "One forward/backward; the loss and the encoder's gradients"
    model.zero_grad()
    z = model(torch.cat([x1, x2]))
    loss = nt_xent(*z.chunk(2), T, gather=gather)
    loss.backward()
    enc = getattr(model, 'module', model).encoder
    return loss.detach(), torch.cat([p.grad.flatten() for p in enc.parameters()])

def _worker(rank, port, out):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=W)
    try:
        x1, x2 = _inputs()
        sl = slice(rank*N, (rank+1)*N)
        model = DDP(_model())   # averages the parameter gradients over the processes
        res = {}
        for name, g in (('gathered', gather_embeddings), ('naive', naive_gather)):
            loss, grad = _step(model, x1[sl], x2[sl], g)
            dist.all_reduce(loss); res[name] = (loss / W, grad)
        # uneven rows: 3 on rank 0 and 5 on rank 1; d(sum of gathered rows * weights)/dt = this process' weights, times W
        t = torch.arange(3 + 2*rank, dtype=torch.float, requires_grad=True)
        G = all_gather_with_grad(t)
        (G * torch.arange(8.)).sum().backward()
        res['uneven'] = (G.detach(), t.grad)
        torch.save(res, f'{out}/rank{rank}.pt')
    finally: dist.destroy_process_group()

@pytest.fixture(scope='module')
def two_procs(tmp_path_factory):
    out = tmp_path_factory.mktemp('ddp')
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=W, join=True)
    return [torch.load(out/f'rank{r}.pt') for r in range(W)]

@pytest.fixture(scope='module')
def single():
    torch.set_num_threads(1)
    return _step(_model(), *_inputs(), None)

def test_gathered_loss_and_grads_equal_one_process(two_procs, single):
    loss1, grad1 = single
    for res in two_procs:
        loss, grad = res['gathered']
        torch.testing.assert_close(loss, loss1, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, grad1, rtol=1e-4, atol=1e-6)
    assert grad1.abs().max() > 0

def test_local_slice_backward_gives_wrong_grads(two_procs, single):
    loss1, grad1 = single
    loss, grad = two_procs[0]['naive']
    torch.testing.assert_close(loss, loss1, rtol=1e-5, atol=1e-6)   # the forward is the same...
    assert not torch.allclose(grad, grad1, rtol=1e-3, atol=1e-5)    # ...the gradients are not
    assert (grad - grad1).norm() > 0.05 * grad1.norm()

def test_uneven_gather(two_procs):
    for r, res in enumerate(two_procs):
        G, g = res['uneven']
        torch.testing.assert_close(G, torch.tensor([0., 1, 2, 0, 1, 2, 3, 4]))
        start = 0 if r == 0 else 3
        torch.testing.assert_close(g, W * torch.arange(start, start + len(g), dtype=torch.float))

DATA = os.environ.get('FASTAI_SIMCLR_DATA')

@pytest.mark.skipif(not DATA, reason='needs real CIFAR-10 in $FASTAI_SIMCLR_DATA')
def test_torchrun_pretrain_smoke(tmp_path):
    "2 processes x 16 pairs on 64 real CIFAR-10 images: trains, and rank 0 alone writes one checkpoint"
    out = tmp_path/'run'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(_free_port()),
           '-m', 'fastai_simclr.cli', 'pretrain', '--preset', 'smoke', '--device', 'cpu', '--out', str(out),
           '--pretrain-bs', '16', '--pretrain-epochs', '1']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('encoder saved to') == 1, r.stdout
    files = sorted(str(f.relative_to(out)) for f in out.rglob('*') if f.is_file())
    assert [f for f in files if 'checkpoint' in f] == ['pretrain/checkpoint.pth'], files
    assert not [f for f in files if f.endswith('.tmp')], files
    res = json.loads((out/'pretrain'/'result.json').read_text())
    assert (res['processes'], res['batch_size_per_process'], res['effective_batch_size']) == (2, 16, 32)
    assert len(res['history']) == 1 and 0 < res['history'][0]['train_loss'] < 10
    ck = torch.load(out/'pretrain'/'checkpoint.pth', weights_only=False)
    assert not any(k.startswith('module.') for k in ck['model'])
