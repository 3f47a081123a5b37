"k-NN monitor: accuracy on clustered/shuffled data, agreement with a brute-force reference, feature extraction, errors"
import pytest, torch
import torch.nn.functional as F
from torch import nn
from fastai_simclr.knn import encoder_features, knn_predict, knn_accuracy, knn_eval
from fastai_simclr.data import CIFAR_STATS

def clusters(n_per, n_classes=10, d=32, noise=0.3, seed=0):
    centers = F.normalize(torch.randn(n_classes, d, generator=torch.Generator().manual_seed(0)), dim=1)
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n_classes).repeat_interleave(n_per)
    return centers[y] + noise*torch.randn(len(y), d, generator=g)/d**0.5, y

def knn_brute(bx, by, qx, k, t, c):
    "One query at a time, in float64: sort all similarities, sum exp(sim/t) per class over the top k"
    bx, qx = F.normalize(bx.double(), dim=1), F.normalize(qx.double(), dim=1)
    res = []
    for q in qx:
        sims = bx @ q
        votes = torch.zeros(c, dtype=torch.double)
        for j in sims.argsort(descending=True)[:k]: votes[by[j]] += torch.exp(sims[j]/t)
        res.append(int(votes.argmax()))
    return torch.tensor(res)

@pytest.mark.parametrize('k', [1, 20, 200])
def test_clusters_are_found(k):
    bx, by = clusters(100); qx, qy = clusters(50, seed=1)
    assert knn_accuracy(bx, by, qx, qy, k=k) == 1.0

def test_shuffled_labels_give_chance():
    bx, by = clusters(200); qx, qy = clusters(100, seed=1)
    accs = [knn_accuracy(bx, by[torch.randperm(len(by), generator=torch.Generator().manual_seed(s))], qx, qy, k=50) for s in range(3)]
    assert 0.03 < sum(accs)/3 < 0.2, accs

@pytest.mark.parametrize('k,t,c,chunk', [(1, 0.1, 5, None), (25, 0.1, 5, 7), (100, 0.5, 3, 1), (300, 0.07, 7, 1000), (10, 1.0, 4, 13)])
def test_matches_brute_force(k, t, c, chunk):
    g = torch.Generator().manual_seed(k)
    bx, by, qx = torch.randn(300, 16, generator=g), torch.randint(0, c, (300,), generator=g), torch.randn(60, 16, generator=g)
    ref = knn_brute(bx, by, qx, k, t, c)
    pred = knn_predict(bx, by, qx, k=k, temperature=t, n_classes=c, chunk_size=chunk)
    assert torch.equal(pred, ref)
    qy = torch.randint(0, c, (60,), generator=g)
    assert knn_accuracy(bx, by, qx, qy, k=k, temperature=t, n_classes=c, chunk_size=chunk) == pytest.approx((ref == qy).float().mean().item())

def test_temperature_changes_votes():
    "A near neighbour of class 0 against two farther ones of class 1: low temperature trusts the nearest"
    bx = torch.tensor([[1., 0.], [0.6, 0.8], [0.6, -0.8]]); by = torch.tensor([0, 1, 1]); q = torch.tensor([[1., 0.05]])
    assert knn_predict(bx, by, q, k=3, temperature=0.05).item() == 0
    assert knn_predict(bx, by, q, k=3, temperature=10.).item() == 1

def test_unnormalized_features_use_cosine():
    bx, by = clusters(20); qx, qy = clusters(10, seed=1)
    scale = torch.rand(len(bx), 1, generator=torch.Generator().manual_seed(0))*100 + 0.01
    assert torch.equal(knn_predict(bx*scale, by, qx*7, k=10), knn_predict(bx, by, qx, k=10))

class Flat(nn.Module):
    def forward(self, x): return x.flatten(1)

def test_encoder_features_normalizes_images_and_features():
    imgs = torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8)
    f = encoder_features(Flat(), imgs, bs=3)
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in CIFAR_STATS)
    assert torch.allclose(f, F.normalize(((imgs.float()/255 - mean)/std).flatten(1), dim=1), atol=1e-6)
    assert f.shape == (7, 48) and not f.requires_grad

def test_encoder_features_eval_mode_no_grad():
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    enc.train()
    imgs = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    before = enc[1].running_mean.clone()
    f1, f12 = encoder_features(enc, imgs, bs=1), encoder_features(enc, imgs, bs=12)
    assert torch.allclose(f1, f12, atol=1e-5)             # eval mode: no batch statistics
    assert torch.equal(enc[1].running_mean, before)        # running stats untouched
    assert enc.training and not f1.requires_grad
    assert torch.allclose(f1.norm(dim=1), torch.ones(12), atol=1e-6)

def test_encoder_features_from_dataloader():
    from fastai_simclr.data import ArrayDataset, ArrayDL
    imgs = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8); ys = torch.arange(50) % 10
    enc = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1))
    dl = ArrayDL(ArrayDataset(imgs, ys), bs=16, shuffle=True, drop_last=True, device='cpu')
    f, y = encoder_features(enc, dl, with_labels=True)
    assert torch.equal(y, ys)                              # every item once, in order, despite shuffle/drop_last
    assert torch.allclose(f, encoder_features(enc, imgs), atol=1e-6)

def test_knn_eval_end_to_end():
    "Images whose colour encodes the class: a pooling encoder separates them perfectly"
    g = torch.Generator().manual_seed(0)
    def make(n):
        y = torch.randint(0, 3, (n,), generator=g)
        x = torch.randint(0, 40, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
        x[torch.arange(n), y] += 200
        return x, y
    (tx, ty), (vx, vy) = make(60), make(30)
    enc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Softmax(dim=1))
    assert knn_eval(enc, tx, ty, vx, vy, k=10) == 1.0
    assert knn_eval(enc, tx, ty[torch.randperm(60, generator=g)], vx, vy, k=60) < 0.7

@pytest.mark.parametrize('f,word', [
    (lambda bx, by, qx: knn_accuracy(bx, by, qx, torch.zeros(len(qx)), k=len(bx)+1), 'larger than the bank'),
    (lambda bx, by, qx: knn_predict(bx, by, qx, k=0), '`k`'),
    (lambda bx, by, qx: knn_predict(bx, by, qx, k=5, temperature=0), 'temperature'),
    (lambda bx, by, qx: knn_predict(bx, by, qx[:, :3], k=5), 'dimensions'),
    (lambda bx, by, qx: knn_predict(bx, by[:-1], qx, k=5), 'bank labels'),
    (lambda bx, by, qx: knn_predict(bx, by, qx, k=5, n_classes=2), 'n_classes'),
    (lambda bx, by, qx: knn_accuracy(bx, by, qx, torch.zeros(3), k=5), 'query labels'),
    (lambda bx, by, qx: encoder_features(Flat(), torch.rand(2, 3, 4, 4)), 'uint8'),
    (lambda bx, by, qx: encoder_features(Flat(), torch.zeros(2, 1, 4, 4, dtype=torch.uint8)), 'shape'),
    (lambda bx, by, qx: knn_eval(Flat(), torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.zeros(3), torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2), k=4), 'larger than the bank'),
])
def test_bad_input(f, word):
    bx, by = clusters(5); qx, _ = clusters(2, seed=1)
    with pytest.raises(ValueError, match=word): f(bx, by, qx)

def test_features_computed_where_asked_with_the_encoder_moved_there():
    "A CPU encoder and device='meta' (no GPU needed): weights and images must meet on the device asked for"
    enc = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1))
    imgs = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    f = encoder_features(enc, imgs, bs=4, device='meta')
    assert f.device.type == 'meta' and f.shape == (6, 4)
    assert {p.device.type for p in enc.parameters()} == {'meta'}

def test_run_knn_computes_on_the_run_device(tmp_path, monkeypatch):
    "run_knn builds its encoders on the CPU; both must compute on the run's device (here meta), never mixed"
    import fastai_simclr.knn as knn_mod
    from fastai_simclr.recipes import run_knn, get_preset, preset_encoder
    from fastai_simclr.model import save_encoder
    from fastai_simclr.data import CIFARData
    seen = []
    def fake_acc(bank, by, query, qy, **kw): seen.append((bank.device.type, query.device.type)); return 0.5  # meta holds no values
    monkeypatch.setattr(knn_mod, 'knn_accuracy', fake_acc)
    p = get_preset('smoke')
    g = torch.Generator().manual_seed(0)
    data = CIFARData(torch.randint(0, 256, (120, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(120) % 10,
                     torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(40) % 10, [str(i) for i in range(10)])
    save_encoder(preset_encoder(p), tmp_path/'enc.safetensors')
    r = run_knn(data, p, tmp_path/'run', tmp_path/'enc.safetensors', device='meta')
    assert seen == [('meta', 'meta')] * 2 and r['random'] == r['pretrained'] == 0.5
