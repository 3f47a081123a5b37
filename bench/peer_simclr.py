"""Throughput of the peer library `self_supervised` (1.0.4): its SimCLR callback and augmentation pipeline under `learn.fit`.

Run by `fastai-simclr bench --peer-python .venv-peer/bin/python` with the python of the venv made by bench/setup_peer.sh;
prints one JSON line with the same fields as the other measurements. Same data (the uint8 CIFAR-10 cache, fed by
`ArrayDL` with `IntToFloatTensor` only: the peer's pipeline normalizes), same model (`create_simclr_model()`), optimizer
(`TorchAdam`), batch size and timing (`time_learner`) as `fastai-simclr bench`: only the callback, augmentation and loss differ.
"""
import argparse, json, sys, warnings
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's fastai_simclr
warnings.filterwarnings('ignore')

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', required=True); ap.add_argument('--bs', type=int, default=256)
    ap.add_argument('--steps', type=int, default=10); ap.add_argument('--warmup', type=int, default=2)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--seed', type=int, default=42)
    ap.add_argument('--threads', type=int); ap.add_argument('--speed', default='{}', help='JSON: bf16, channels_last, compile')
    a = ap.parse_args()
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    import self_supervised, kornia
    from self_supervised.vision.simclr import SimCLR, get_simclr_aug_pipelines
    from fastai.vision.all import Learner, IntToFloatTensor, set_seed, noop
    from fastai_simclr.data import load_cifar10, ArrayDL, ArrayDataset, CIFAR_STATS
    from fastai_simclr.model import create_simclr_model
    from fastai_simclr.optim import TorchAdam
    from fastai_simclr.speed import speed_cbs
    from fastai_simclr.bench import time_learner, _n_images
    dev = torch.device(a.device)
    data = load_cifar10(a.data, verbose=False)
    n, n_epoch = _n_images(a.bs, a.warmup + a.steps, len(data.train_x))
    g = torch.Generator().manual_seed(a.seed)
    x = data.train_x[torch.randperm(len(data.train_x), generator=g)[:n].sort().values]
    set_seed(a.seed)
    mk = lambda x, split: ArrayDL(ArrayDataset(x, split_idx=split), bs=a.bs, shuffle=split == 0, drop_last=True,
                                  after_batch=[IntToFloatTensor()], device=dev)
    from fastai.data.core import DataLoaders
    dls = DataLoaders(mk(x, 0), mk(data.test_x[:2*a.bs], 1), device=dev)
    # the peer's pipeline set to the SimCLR CIFAR strengths: crop scale 0.08-1, flip, jitter 0.4/0.4/0.4/0.1 p=0.8, gray p=0.2
    augs = get_simclr_aug_pipelines(32, rotate=False, blur=False, resize_scale=(0.08, 1.0), jitter_s=0.5, jitter_p=0.8, bw_p=0.2,
                                    stats=CIFAR_STATS, cuda=dev.type == 'cuda')
    learn = Learner(dls, create_simclr_model(), loss_func=noop, opt_func=TorchAdam, lr=1e-3, wd=1e-6, # SimCLR sets the loss
                    cbs=[SimCLR(augs, temp=0.5), *speed_cbs(**json.loads(a.speed), device=dev)])
    r = time_learner(learn, a.steps, a.warmup, dev.type != 'cuda', n_epoch)
    if dev.type == 'cuda': r['split_ms'] = time_learner(learn, min(a.steps, 20), 2, True, n_epoch)['split_ms']
    r['library'] = f"self_supervised 1.0.4, kornia {kornia.__version__}"
    print('\n' + json.dumps(r)) # on a line of its own, after the progress bar

if __name__ == '__main__': main()
