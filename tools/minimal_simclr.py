"""A minimal SimCLR loop in plain PyTorch, to compare with the library at the same settings (issue #17).

Independent of the library's training code: torchvision's per-image transforms (not our batched ones), its own NT-Xent
(one cross-entropy over the similarity matrix), a plain Adam/StepLR loop. Shared with the library, on purpose: the images
(the uint8 cache and `pretrain_indices`), the model (`cifar_resnet18` + projection head, same seeded initialization) and
the k-NN evaluation (`knn_eval` on the bank and test images of `run_knn`), so that a difference comes from the training.
`--impl ours` runs the library (`pretrain_learner` + `learn.fit`) on the same images and measures it the same way.

    python tools/minimal_simclr.py --impl minimal --preset quick --out runs/minimal-quick.json
    python tools/minimal_simclr.py --impl ours    --preset quick --out runs/ours-quick.json
"""
import argparse, json, time
import torch, torch.nn.functional as F
from torchvision.transforms import v2 as T
from fastai.basics import set_seed, Callback
from fastai_simclr.all import *
from fastai_simclr.recipes import SALTS

def plain_nt_xent(z1, z2, t):
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.T / t).fill_diagonal_(float('-inf'))
    n = len(z1)
    return F.cross_entropy(sim, torch.cat([torch.arange(n, 2*n), torch.arange(n)]))

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--impl', choices=('minimal', 'ours'), required=True)
    ap.add_argument('--preset', default='quick')
    ap.add_argument('--epochs', type=int, help="default: the preset's pre-training epochs")
    ap.add_argument('--bank', type=int, nargs='+', default=None, help="k-NN bank sizes to report at the end (default: the preset's)")
    ap.add_argument('--fp32', action='store_true', help='float32 instead of bf16 autocast + channels-last')
    ap.add_argument('--out', required=True)
    a = ap.parse_args()
    p, seed = get_preset(a.preset), 42
    if a.epochs: p = p.replace(pretrain_epochs=a.epochs)
    data = load_cifar10(verbose=False)
    x = data.train_x[pretrain_indices(data, p, seed)]
    stats = preset_stats(p)
    test = test_indices(data, p.knn_test_n, seed, 'knn_test')
    def knn(enc, bank_n=p.knn_bank_n):
        bank = seeded_subset(len(data.train_x), bank_n, seed, SALTS['knn_bank'])
        return float(knn_eval(enc, data.train_x[bank], data.train_y[bank], data.test_x[test], data.test_y[test], k=p.knn_k, stats=stats, device='cpu'))
    bf16 = not a.fp32
    log = {'impl': a.impl, 'preset': p.name, 'epochs': p.pretrain_epochs, 'images': len(x), 'bf16': bf16, 'knn': [], 'loss': []}
    t0 = time.time()
    if a.impl == 'minimal':
        set_seed(seed)
        model = create_simclr_model(preset_encoder(p, seed), n_hidden=p.head_hidden, n_out=p.head_out)
        if bf16: model = model.to(memory_format=torch.channels_last)
        aug = T.Compose([T.RandomResizedCrop(32, scale=(p.min_scale, 1.), antialias=True), T.RandomHorizontalFlip(),
                         T.RandomApply([T.ColorJitter(*p.jitter)], p=p.p_jitter), T.RandomGrayscale(p.p_gray),
                         T.ToDtype(torch.float32, scale=True), T.Normalize(*stats)])
        opt = torch.optim.Adam(model.parameters(), lr=p.pretrain_lr, weight_decay=p.pretrain_wd)
        sched = torch.optim.lr_scheduler.StepLR(opt, p.pretrain_step, p.pretrain_gamma)
        log['knn'].append(knn(model.encoder))
        for ep in range(p.pretrain_epochs):
            model.train()
            perm, losses = torch.randperm(len(x)), []
            for i in range(0, len(x) - p.pretrain_bs + 1, p.pretrain_bs):   # drop the last partial batch, as the library does
                xb = x[perm[i:i + p.pretrain_bs]]
                v1, v2 = (torch.stack([aug(im) for im in xb]) for _ in range(2))
                if bf16: v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
                with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                    z1, z2 = (model(v1), model(v2)) if p.views == 'separate' else model(torch.cat([v1, v2])).chunk(2)
                loss = plain_nt_xent(z1, z2, p.temperature)
                opt.zero_grad(); loss.backward(); opt.step(); losses.append(loss.item())
            sched.step()
            log['loss'].append(sum(losses) / len(losses)); log.setdefault('batch_loss', []).extend(losses)
            log['knn'].append(knn(model.encoder))
            print(f"epoch {ep}: loss {log['loss'][-1]:.4f}, k-NN {100*log['knn'][-1]:.1f}%", flush=True)
        enc = model.encoder
    else:
        dls = unlabeled_dls(subset_data(data, pretrain_indices(data, p, seed)), bs=p.pretrain_bs, valid_n=p.pretrain_valid_n, seed=seed,
                            device='cpu', stats=stats)
        learn = pretrain_learner(dls, p, seed, cbs=speed_cbs(bf16=bf16, channels_last=bf16, device='cpu'))
        class KNN(Callback):
            order = 100
            def before_fit(self): log['knn'].append(knn(self.learn.model.encoder))
            def after_epoch(self):
                log['knn'].append(knn(self.learn.model.encoder)); log['loss'].append(float(self.learn.recorder.values[-1][0]) if self.learn.recorder.values else None)
                print(f"epoch {self.epoch}: k-NN {100*log['knn'][-1]:.1f}%", flush=True)
        learn.fit(p.pretrain_epochs, cbs=KNN())
        enc = learn.model.encoder
        log['batch_loss'] = [float(l) for l in learn.recorder.losses]   # fastai's smoothed training loss, per batch
    log['seconds'] = round(time.time() - t0)
    log['knn_by_bank'] = {n: knn(enc, n) for n in (a.bank or [p.knn_bank_n])}
    print(json.dumps(log))
    json.dump(log, open(a.out, 'w'), indent=1)

if __name__ == '__main__': main()
