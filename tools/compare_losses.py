# Before/after check for issue #13: same settings and seed, the per-batch losses of a short CIFAR pre-training run.
# Run it at two commits: python loss_check.py OUT.json; then compare the two files.
import sys, json, torch
from fastai.vision.all import set_seed, Callback
from fastai_simclr.all import *
class Losses(Callback):
    order = 60
    def before_fit(self): self.raw = []
    def after_loss(self): self.raw.append(float(self.learn.loss))
data = load_cifar10()
out = {}
for views in ('joint', 'separate'):
    for lr in (0., 1e-3):
        p = get_preset('quick').replace(views=views, pretrain_bs=64)
        sub = subset_data(data, pretrain_indices(data, p.replace(pretrain_n=512, frac=0.002), 42))
        dls = unlabeled_dls(sub, bs=64, valid_n=128, seed=42, device='cpu', stats=preset_stats(p))
        learn = pretrain_learner(dls, p, 42)
        if lr == 0: learn.remove_cbs([c for c in learn.cbs if type(c).__name__ == 'StepLR'])  # lr 0: the same weights every batch
        rec = Losses()
        set_seed(42)
        learn.fit(1, lr, cbs=rec)
        out[f'{views} lr={lr}'] = rec.raw
        print(views, lr, rec.raw)
json.dump(out, open(sys.argv[1], 'w'), indent=1)
