"The data layer on real CIFAR-10: subset and fold properties, the cache, and a clear error for each bad input"
import os, shutil
import numpy as np, pytest, torch
from fastai_simclr.data import *

@pytest.mark.parametrize('method', ['sklearn', 'numpy'])
def test_label_subset_exact_and_reproducible(cifar, method):
    y = cifar.train_y.numpy()
    sub = label_subset(y, 0.3, seed=42, method=method)
    assert len(sub) == 15_000 and len(np.unique(sub)) == 15_000
    assert np.bincount(y[sub]).tolist() == [1500]*10
    assert np.array_equal(sub, label_subset(y, 0.3, seed=42, method=method))
    other = label_subset(y, 0.3, seed=7, method=method)
    assert not np.array_equal(sub, other) and np.bincount(y[other]).tolist() == [1500]*10
    all_ = label_subset(y, 1.0, method=method)
    assert len(all_) == 50_000 and np.array_equal(np.sort(all_), np.arange(50_000))

def test_label_subset_pinned_indices():
    "The same seed picks the same images on any machine: indices measured once on the development machine"
    y = np.repeat(np.arange(3), 10)
    # NumPy's PCG64 is platform independent
    assert label_subset(y, 0.5, seed=42, method='numpy').tolist() == [0, 3, 4, 5, 7, 10, 13, 16, 17, 19, 21, 23, 24, 25, 28]
    # scikit-learn's StratifiedShuffleSplit (1.9.1 here); a change means a scikit-learn release draws otherwise than the original's
    assert label_subset(y, 0.5, seed=42, method='sklearn').tolist() == [4, 19, 21, 2, 23, 25, 14, 12, 27, 3, 9, 24, 16, 6, 17]

def test_label_subset_default_is_the_originals(cifar):
    "The default: `StratifiedShuffleSplit(n_splits=1, test_size=0.3, random_state=42)`, keeping the test part, in its order"
    from sklearn.model_selection import StratifiedShuffleSplit
    y = cifar.train_y.numpy()
    _, orig = next(StratifiedShuffleSplit(n_splits=1, test_size=0.3, random_state=42).split(np.zeros((len(y), 3, 32, 32)), y))
    assert np.array_equal(label_subset(y), orig) and np.array_equal(label_subset(y, 0.3, 42, 'sklearn'), orig)
    assert not np.array_equal(orig, np.sort(orig))   # scikit-learn's order is kept: the folds depend on it

def test_label_subset_bad_args(cifar):
    with pytest.raises(DataError, match="'sklearn' or 'numpy'"): label_subset(cifar.train_y, 0.3, method='random')
    for seed in (-1, 2**32, 1.5, True):
        with pytest.raises(DataError, match='seed must be an integer'): label_subset(cifar.train_y, 0.3, seed=seed)
    with pytest.raises(DataError, match='cannot draw a stratified'): label_subset(cifar.train_y, 0.0001)   # 5 images, 10 classes
    with pytest.raises(DataError, match='keeps no image of class'): label_subset(cifar.train_y, 0.0001, method='numpy')

@pytest.mark.parametrize('method', ['sklearn', 'numpy'])
@pytest.mark.parametrize('frac', [0, -0.1, 1.01, 2, float('nan'), True])
def test_label_subset_bad_frac(cifar, frac, method):
    with pytest.raises(DataError, match=r'\(0, 1\]'): label_subset(cifar.train_y, frac, method=method)

@pytest.mark.parametrize('stratified', [True, False])
def test_kfold_partition_on_real_labels(cifar, stratified):
    y = cifar.train_y.numpy()
    sub = label_subset(y, 0.3, seed=42)
    get_y = (lambda i: y[sub[i]]) if stratified else None
    items = list(range(len(sub)))
    vals = []
    for f in range(5):
        trn, val = KFoldSplitter(5, f, seed=42, get_y=get_y)(items)
        assert not set(trn) & set(val) and len(trn) + len(val) == len(items)
        if stratified: assert np.bincount(y[sub[list(val)]]).tolist() == [300]*10
        vals.append(set(val))
    assert set.union(*vals) == set(items) and sum(map(len, vals)) == len(items)
    # same seed, same folds; another seed, other folds
    assert KFoldSplitter(5, 0, seed=42, get_y=get_y)(items)[1] == KFoldSplitter(5, 0, seed=42, get_y=get_y)(items)[1]
    assert KFoldSplitter(5, 0, seed=1, get_y=get_y)(items)[1] != KFoldSplitter(5, 0, seed=42, get_y=get_y)(items)[1]

def test_kfold_follows_item_order(cifar):
    "Folds are StratifiedKFold over the items in the order given (string labels number the classes as the ints do)"
    from sklearn.model_selection import StratifiedKFold
    y = cifar.train_y.numpy()
    for sub in (label_subset(y, 0.3, 42), label_subset(y, 0.3, 42, method='numpy')):
        ys = y[sub]
        ref = list(StratifiedKFold(5, shuffle=True, random_state=42).split(np.zeros(len(sub)), ys))
        for f in range(5):
            trn, val = KFoldSplitter(5, f, 42, get_y=lambda i: ys[i])(range(len(sub)))
            assert list(trn) == ref[f][0].tolist() and list(val) == ref[f][1].tolist()
    sub = label_subset(y, 0.3, 42); srt = np.sort(sub)
    val = lambda s: set(s[list(KFoldSplitter(5, 0, 42, get_y=lambda i: y[s][i])(range(len(s)))[1])])
    assert val(sub) != val(srt)   # the same set in another order gives other folds

def test_kfold_in_datablock(small_cifar):
    from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, get_image_files, parent_label
    dsets = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                      splitter=KFoldSplitter(4, fold=1, get_y=parent_label)).datasets(small_cifar/'train')
    assert (len(dsets.train), len(dsets.valid)) == (30, 10)
    assert sorted(dsets.vocab[o[1]] for o in dsets.valid) == sorted(dsets.vocab)   # one of each class

@pytest.mark.parametrize('fold', [-1, 5, 1.5])
def test_fold_out_of_range(fold):
    with pytest.raises(DataError, match=r'0\.\.4'): KFoldSplitter(5, fold)

def test_more_folds_than_items_of_a_class():
    with pytest.raises(DataError, match="class '1' has only 2 items"): KFoldSplitter(3, get_y=lambda o: int(o >= 8))(range(10))
    with pytest.raises(DataError, match='cannot make 5 folds of 3 items'): KFoldSplitter(5)(range(3))

def test_fold_dls_cover_subset(cifar):
    dls = [fold_dls(cifar, fold=f, bs=64, device='cpu') for f in range(5)]
    sub = set(label_subset(cifar.train_y, 0.3, 42).tolist())
    vals = [set(d.valid_idxs.tolist()) for d in dls]
    assert set.union(*vals) == sub and sum(map(len, vals)) == len(sub)
    for d in dls: assert not set(d.train_idxs.tolist()) & set(d.valid_idxs.tolist())
    x, y = dls[0].one_batch()
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (64,)
    # the batch holds exactly the images of those indices, normalized
    first = dls[0].valid.one_batch()
    raw = cifar.train_x[dls[0].valid_idxs[:64]].float() / 255
    mean, std = (torch.tensor(s).view(1,3,1,1) for s in CIFAR_STATS)
    assert torch.allclose(first[0], (raw - mean) / std, atol=1e-5)
    assert torch.equal(first[1], cifar.train_y[dls[0].valid_idxs[:64]])
    assert len(dls[0].test.dataset) == 10_000

def test_fold_dls_equal_the_originals_folds(cifar):
    "Every fold's indices equal scikit-learn called as the original: StratifiedShuffleSplit, then StratifiedKFold in its order"
    from sklearn.model_selection import StratifiedShuffleSplit, StratifiedKFold
    y = cifar.train_y.numpy()
    _, lab = next(StratifiedShuffleSplit(n_splits=1, test_size=0.3, random_state=42).split(np.zeros(len(y)), y))
    folds = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=42).split(np.zeros(len(lab)), y[lab]))
    for f, (trn, val) in enumerate(folds):
        d = fold_dls(cifar, fold=f, bs=64, device='cpu')
        assert np.array_equal(d.train_idxs, lab[trn]) and np.array_equal(d.valid_idxs, lab[val])
        assert torch.equal(d.valid.one_batch()[1], cifar.train_y[lab[val][:64]])
    # another seed: the same procedure with that random_state
    _, lab7 = next(StratifiedShuffleSplit(n_splits=1, test_size=0.3, random_state=7).split(np.zeros(len(y)), y))
    _, val7 = list(StratifiedKFold(n_splits=5, shuffle=True, random_state=7).split(np.zeros(len(lab7)), y[lab7]))[2]
    assert np.array_equal(fold_dls(cifar, fold=2, seed=7, bs=64, device='cpu').valid_idxs, lab7[val7])

def test_fold_dls_numpy_subset(cifar):
    sub = label_subset(cifar.train_y, 0.3, 42, method='numpy')
    ys = cifar.train_y.numpy()[sub]
    _, val = KFoldSplitter(5, 1, 42, get_y=lambda i: ys[i])(range(len(sub)))
    d = fold_dls(cifar, fold=1, bs=64, device='cpu', subset='numpy')
    assert np.array_equal(d.valid_idxs, sub[list(val)])
    with pytest.raises(DataError, match="'sklearn' or 'numpy'"): fold_dls(cifar, subset='pandas')

@pytest.mark.parametrize('stats', [CIFAR_STATS, SEED_CIFAR_STATS])
def test_fold_dls_stats(cifar, stats):
    d = fold_dls(cifar, fold=0, bs=64, device='cpu', stats=stats)
    raw = cifar.train_x[d.valid_idxs[:64]].float() / 255
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in stats)
    assert torch.allclose(d.valid.one_batch()[0], (raw - mean) / std, atol=1e-5)

def test_stats_constants():
    from fastai_simclr import utils
    assert CIFAR_STATS is utils.CIFAR_STATS and SEED_CIFAR_STATS is utils.SEED_CIFAR_STATS
    assert SEED_CIFAR_STATS == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))   # the original's values

@pytest.mark.parametrize('stats,word', [(((0.5, 0.5), (0.2, 0.2)), '3 finite values'), (((0.5,)*3, (0.2, 0., 0.2)), 'std > 0'),
                                        ((0.5, 0.2), '3 finite values'), (((0.5,)*3, (0.2, float('nan'), 0.2)), 'std > 0')])
def test_fold_dls_bad_stats(cifar, stats, word):
    with pytest.raises(DataError, match=word): fold_dls(cifar, bs=64, device='cpu', stats=stats)

def test_unlabeled_dls(cifar):
    dls = unlabeled_dls(cifar, bs=100, n=1000, valid_n=250, device='cpu')
    b = dls.one_batch()
    assert len(b) == 1 and b[0].shape == (100, 3, 32, 32)
    assert len(dls.train) == 10 and len(dls.valid_ds) == 250
    assert all(len(v[0]) % 2 == 0 for v in dls.valid)   # even batches: SimCLR needs pairs
    with pytest.raises(DataError, match='larger than'): unlabeled_dls(cifar, bs=2000, n=1000)
    with pytest.raises(DataError, match='positive integer'): unlabeled_dls(cifar, bs=0)

def test_cache_reused_and_invalidated(small_cifar, tmp_path, capsys):
    cache = tmp_path/'cache'
    a = load_cifar10(small_cifar, cache_dir=cache)
    assert 'cached in' in capsys.readouterr().out and len(list(cache.glob('*.npz'))) == 1
    b = load_cifar10(small_cifar, cache_dir=cache)
    assert 'from cache' in capsys.readouterr().out
    assert torch.equal(a.train_x, b.train_x) and a.train_x.shape == (40, 3, 32, 32)
    # replacing a file invalidates the cache
    cat = sorted((small_cifar/'train'/'cat').iterdir())
    shutil.copy(cat[1], cat[0]); os.utime(cat[0], ns=(1, 1))
    c = load_cifar10(small_cifar, cache_dir=cache)
    assert 'cached in' in capsys.readouterr().out and len(list(cache.glob('*.npz'))) == 1
    i = list(c.vocab).index('cat') * 4
    assert torch.equal(c.train_x[i], c.train_x[i+1]) and not torch.equal(a.train_x[i], c.train_x[i])

def test_default_cache_beside_data(small_cifar):
    d = load_cifar10(small_cifar, verbose=False)
    assert d.cache_file.parent == small_cifar/'.fastai_simclr_cache'

def test_env_var(small_cifar, monkeypatch):
    monkeypatch.setenv('FASTAI_SIMCLR_DATA', str(small_cifar))
    assert cifar10_path() == small_cifar.resolve()

def test_missing_path(tmp_path):
    with pytest.raises(DataError, match='not found: .*nowhere'): load_cifar10(tmp_path/'nowhere')

def test_no_train_test(tmp_path):
    (tmp_path/'train').mkdir()
    with pytest.raises(DataError, match=r'no test/ subfolder'): load_cifar10(tmp_path)

def test_empty_class_folder(small_cifar):
    for f in (small_cifar/'test'/'dog').iterdir(): f.unlink()
    with pytest.raises(DataError, match=r'test/dog has no images'): load_cifar10(small_cifar, verbose=False)

def test_unreadable_image_named(small_cifar):
    bad = small_cifar/'train'/'frog'/'broken.jpg'
    bad.write_bytes(b'not a jpeg at all')
    with pytest.raises(DataError, match=r'cannot read image .*frog/broken\.jpg'): load_cifar10(small_cifar, verbose=False)

def test_truncated_image_named(small_cifar):
    f = sorted((small_cifar/'train'/'ship').iterdir())[0]
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(DataError, match=f'cannot read image .*ship/{f.name}'): load_cifar10(small_cifar, verbose=False)
