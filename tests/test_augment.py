"Augmentations: shape/dtype/device/range, per-image randomness, pipeline order, torchvision colour semantics"
import pytest, torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor
from fastai.vision.all import TensorImage, Pipeline, IntToFloatTensor, Normalize
from fastai_simclr.augment import *
from fastai_simclr.augment import _pipe

@pytest.fixture
def x():
    torch.manual_seed(0)
    return TensorImage(torch.rand(32, 3, 32, 32))

ALL = [RandomResizedCrop(32), RandomCropPad(32, 4), RandomFlip(), ColorJitter(), RandomGrayscale(), GaussianBlur()]

@pytest.mark.parametrize('tfm', ALL, ids=lambda t: type(t).__name__)
def test_each_keeps_shape_dtype_device_range(tfm, x):
    for split_idx in [None, 0, 1]:        # SimCLR transforms also run on the validation split
        y = tfm(x, split_idx=split_idx)
        assert isinstance(y, TensorImage) and y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert y.min() >= 0 and y.max() <= 1
        assert not torch.equal(y, x)

@pytest.mark.parametrize('tfm', ALL, ids=lambda t: type(t).__name__)
def test_rejects_uint8(tfm):
    with pytest.raises(ValueError, match='float images'): tfm(TensorImage(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)))

@pytest.mark.parametrize('name', ['simclr', 'simclr_blur', 'train', 'train_fastai'])
def test_views_differ_and_stay_in_range(name, x):
    augs = {'simclr': simclr_augs(), 'simclr_blur': simclr_augs(blur=True), 'train': cifar_train_augs(),
            'train_fastai': cifar_train_augs(rotation='fastai')}[name]
    pipe = _pipe(augs)
    v1, v2 = pipe(x), pipe(x)
    for v in (v1, v2):
        assert v.shape == x.shape and v.dtype == x.dtype and isinstance(v, TensorImage)
        assert v.min() >= 0 and v.max() <= 1
    assert (v1 - v2).abs().amax((1, 2, 3)).min() > 0      # every image's two views differ

def test_per_image_parameters_differ(x):
    c = RandomResizedCrop(32); c.before_call(x, None)
    assert c.theta[:, 0, 0].unique().numel() == 32 and c.theta[:, 1, 2].unique().numel() == 32
    j = ColorJitter(); j.before_call(x, None)
    assert all(f.unique().numel() == 32 for f in j.factors)
    assert j.perm.unique(dim=0).shape[0] > 1
    f = RandomFlip(); f.before_call(TensorImage(torch.rand(256, 3, 4, 4)), None)
    assert 0.3 < f.mask.float().mean() < 0.7
    g = RandomGrayscale(); g.before_call(TensorImage(torch.rand(1000, 3, 4, 4)), None)
    assert 0.15 < g.mask.float().mean() < 0.25
    j = ColorJitter(p=0.8); j.before_call(TensorImage(torch.rand(1000, 3, 4, 4)), None)
    assert 0.75 < j.mask.float().mean() < 0.85

def test_crop_scale_and_ratio():
    c = RandomResizedCrop(32, min_scale=0.08)
    c.before_call(TensorImage(torch.rand(4000, 3, 32, 32)), None)
    fw, fh = c.theta[:, 0, 0], c.theta[:, 1, 1]
    area, ratio = fw * fh, fw / fh
    assert area.min() >= 0.08 - 1e-6 and area.max() <= 1 + 1e-6
    assert ratio.min() >= 3/4 - 1e-5 and ratio.max() <= 4/3 + 1e-5
    assert (c.theta[:, 0, 2].abs() <= 1 - fw + 1e-6).all()       # crop inside the image
    full = RandomResizedCrop(32, min_scale=1., ratio=(1., 1.))
    x = TensorImage(torch.rand(4, 3, 32, 32))
    torch.testing.assert_close(full(x), x, atol=1e-5, rtol=0)      # scale 1, ratio 1: identity

def test_flip_and_gray_exact(x):
    f = RandomFlip(p=1.)
    torch.testing.assert_close(f(x), x.flip(-1))
    g = RandomGrayscale(p=1.)(x)
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])
    assert torch.equal(RandomGrayscale(p=0.)(x), x)
    assert torch.equal(ColorJitter(p=0.)(x), x)

def test_crop_pad_is_shifted_window(x):
    t = RandomCropPad(32, 4); t.before_call(x, None)
    y = t(x, split_idx=None)
    xp = torch.nn.functional.pad(x.as_subclass(Tensor), (4,) * 4)
    for i in range(4):
        oy, ox = t.oy[i].item(), t.ox[i].item()
        torch.testing.assert_close(y[i].as_subclass(Tensor), xp[i, :, oy:oy+32, ox:ox+32])

@pytest.mark.parametrize('f', [0.5, 1.0, 1.4])
def test_colour_ops_match_torchvision(f, x):
    t = x[:4].as_subclass(Tensor)
    ff = torch.full((4,), f)
    torch.testing.assert_close(adjust_brightness(t, ff), TF.adjust_brightness(t, f))
    torch.testing.assert_close(adjust_contrast(t, ff), TF.adjust_contrast(t, f))
    torch.testing.assert_close(adjust_saturation(t, ff), TF.adjust_saturation(t, f))
    torch.testing.assert_close(rgb_to_gray(t), TF.rgb_to_grayscale(t))

@pytest.mark.parametrize('h', [-0.5, -0.1, 0., 0.25])
def test_hue_matches_torchvision(h, x):
    t = x[:4].as_subclass(Tensor)
    torch.testing.assert_close(adjust_hue(t, torch.full((4,), h)), TF.adjust_hue(t, h), atol=1e-5, rtol=1e-5)

def test_jitter_applies_per_image_order(x):
    "With the drawn order and factors, each image equals torchvision applied in that order"
    j = ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.)
    j.before_call(x, None)
    y = j(x, split_idx=None)
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    for i in range(6):
        img = x[i].as_subclass(Tensor)
        for k in j.perm[i].tolist(): img = ops[k](img, j.factors[k][i].item())
        torch.testing.assert_close(y[i].as_subclass(Tensor), img, atol=1e-5, rtol=1e-5)

def test_orders_and_pipeline(x):
    tfms = [*simclr_augs(blur=True), *cifar_train_augs()]
    assert all(IntToFloatTensor.order < t.order < Normalize.order for t in tfms)
    p = Pipeline([Normalize.from_stats([0.5]*3, [0.25]*3, cuda=False), *simclr_augs(), IntToFloatTensor()], split_idx=1)
    assert [type(t).__name__ for t in p.fs] == ['IntToFloatTensor', 'RandomResizedCrop', 'RandomFlip', 'ColorJitter', 'RandomGrayscale', 'Normalize']
    out = p(TensorImage((x * 255).byte()))
    assert out.dtype == torch.float32 and out.shape == x.shape

@pytest.mark.parametrize('rotation', ['original', 'fastai'])
def test_train_augs_train_split_only(x, rotation):
    augs = cifar_train_augs(rotation=rotation)
    assert all(t.split_idx == 0 for t in augs if type(t).__name__ != 'Rotate')   # fastai's Rotate turns itself into the identity on validation
    v = Pipeline(augs, split_idx=1)(x)                        # validation batches are left alone
    if rotation == 'original': assert torch.equal(v, x)
    else: torch.testing.assert_close(v, x, atol=1e-5, rtol=0)
    assert not torch.equal(Pipeline(augs, split_idx=0)(x), x)

def test_train_augs_order():
    "'original': the original's order (crop, flip, jitter, then a nearest/zero-fill rotation); 'fastai': fastai's Rotate before the jitter"
    names = lambda augs: [type(t).__name__ for t in _pipe(augs).fs]
    assert names(cifar_train_augs()) == ['RandomCropPad', 'RandomFlip', 'ColorJitter', 'RandomRotation']
    assert names(cifar_train_augs(rotation='fastai')) == ['RandomCropPad', 'RandomFlip', 'Rotate', 'ColorJitter']
    a = cifar_train_augs(size=28, padding=2, jitter=0.3, max_deg=5.)
    assert (a[0].size, a[0].padding, a[2].brightness, a[2].hue, a[2].p, a[3].max_deg) == (28, 2, 0.3, 0.3, 1., 5.)
    with pytest.raises(ValueError, match="'original' or 'fastai'"): cifar_train_augs(rotation='torchvision')

@pytest.fixture(scope='module')
def real(cifar):
    "256 real training images (a seeded sample: the files are sorted by class) as floats in [0,1]"
    idx = torch.randperm(len(cifar.train_x), generator=torch.Generator().manual_seed(0))[:256]
    return TensorImage(cifar.train_x[idx].float() / 255)

def test_rotation_matches_torchvision_on_real_images(real):
    from torchvision.transforms import InterpolationMode
    torch.manual_seed(0)
    r = RandomRotation(10.)
    y = r(real, split_idx=0)
    assert isinstance(y, TensorImage) and y.shape == real.shape and y.dtype == real.dtype
    for i in range(len(real)):   # pixel for pixel
        ref = TF.rotate(real[i].as_subclass(Tensor), r.angle[i].item(), InterpolationMode.NEAREST, fill=0)
        assert torch.equal(y[i].as_subclass(Tensor), ref), i
    # not square: 24x40 crops of the same images
    xs = TensorImage(torch.nn.functional.interpolate(real[:64].as_subclass(Tensor), size=(24, 40)))
    ys = r(xs, split_idx=0)
    for i in range(64):
        assert torch.equal(ys[i].as_subclass(Tensor), TF.rotate(xs[i].as_subclass(Tensor), r.angle[i].item(), InterpolationMode.NEAREST, fill=0))

def test_rotation_angles_and_splits(x):
    r = RandomRotation(10.)
    r.before_call(TensorImage(torch.rand(4000, 3, 4, 4)), 0)
    a = r.angle
    assert a.unique().numel() == 4000 and a.min() >= -10 and a.max() <= 10
    assert a.min() < -9.9 and a.max() > 9.9 and abs(a.mean()) < 0.5 and abs(a.std() - 20 / 12**0.5) < 0.2   # U(-10, 10)
    assert torch.equal(RandomRotation(10.)(x, split_idx=1), x)                 # validation: untouched
    assert torch.equal(RandomRotation(0.)(x, split_idx=0), x)
    r = RandomRotation(10.)
    y = r(x, split_idx=0)
    assert y.min() >= 0 and y.max() <= 1
    assert ((y - x).abs().amax((1, 2, 3)) > 0)[r.angle.abs() > 2].all()   # under ~1.8 degrees no pixel of a 32x32 image moves to another
    assert (y[:, :, 0, 0] == 0).float().mean() > 0.3   # corners uncovered by the rotation are zero (black), often
    with pytest.raises(ValueError, match='float images'): RandomRotation()(TensorImage(torch.zeros(2, 3, 8, 8, dtype=torch.uint8)), split_idx=0)
    for bad in (-1, 181, 'x', float('nan')):
        with pytest.raises(ValueError, match='max_deg'): RandomRotation(bad)

def test_original_train_augs_equal_torchvision_per_image(real):
    "With each transform's drawn parameters, torchvision's functional ops applied per image in the original's order give the batch"
    from torchvision.transforms import InterpolationMode
    torch.manual_seed(1)
    augs = cifar_train_augs()
    out = _pipe(augs)(real[:48])
    crop, flip, jit, rot = augs
    ops = [TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue]
    assert flip.mask.any() and not flip.mask.all()
    for i in range(48):
        img = TF.crop(TF.pad(real[i].as_subclass(Tensor), [4] * 4, fill=0), crop.oy[i].item(), crop.ox[i].item(), 32, 32)
        if flip.mask[i]: img = TF.horizontal_flip(img)
        for k in jit.perm[i].tolist(): img = ops[k](img, jit.factors[k][i].item())
        img = TF.rotate(img, rot.angle[i].item(), InterpolationMode.NEAREST, fill=0)
        torch.testing.assert_close(out[i].as_subclass(Tensor), img, atol=1e-5, rtol=1e-5)

def test_bad_parameters():
    with pytest.raises(ValueError, match='min_scale'): RandomResizedCrop(32, min_scale=0)
    with pytest.raises(ValueError, match='ratio'): RandomResizedCrop(32, ratio=(2, 1))
    with pytest.raises(ValueError, match='hue'): ColorJitter(hue=0.7)
    with pytest.raises(ValueError, match='brightness'): ColorJitter(brightness=-1)
    with pytest.raises(ValueError, match='channels'): ColorJitter(p=1.)(TensorImage(torch.rand(2, 1, 8, 8)))
    with pytest.raises(ValueError, match='larger than the padded'): RandomCropPad(64, 4)(TensorImage(torch.rand(2, 3, 32, 32)))

def test_plot_views():
    import matplotlib
    fig = plot_views(torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8), n=5)
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 15
