"Encoder stem, timm API, heads, splitter and `load_encoder` errors"
import pytest, torch, timm
from torch import nn
from fastai_simclr.model import *
from safetensors import safe_open
from safetensors.torch import load_file, save_file

@pytest.fixture(scope='module')
def enc(): return cifar_resnet18()

@pytest.mark.parametrize('bs', [1, 3])
def test_encoder_shape(enc, bs):
    assert enc.eval()(torch.randn(bs, 3, 32, 32)).shape == (bs, 512)

def test_stem(enc):
    c = enc.conv1
    assert isinstance(c, nn.Conv2d)
    assert (c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.bias) == (3, 64, (3,3), (1,1), (1,1), None)
    assert isinstance(enc.maxpool, nn.Identity)

def test_timm_api(enc):
    x = torch.randn(2, 3, 32, 32)
    assert isinstance(enc, timm.models.ResNet)
    assert enc.num_features == 512
    assert enc.forward_features(x).shape == (2, 512, 4, 4)
    m = cifar_resnet18()
    m.reset_classifier(10)
    assert m(x).shape == (2, 10)
    assert [f['reduction'] for f in enc.feature_info] == [1, 1, 2, 4, 8]

def test_kwargs_passed_to_timm():
    m = cifar_resnet18(in_chans=1)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 512)

def test_simclr_model(enc):
    m = create_simclr_model(enc)
    assert m.encoder is enc
    h = m.head
    assert (h[0].in_features, h[0].out_features, h[0].bias, h[2].out_features) == (512, 512, None, 128)
    assert isinstance(h[1], nn.ReLU)
    x = torch.randn(3, 3, 32, 32)
    m.eval()
    torch.testing.assert_close(m(x), m.head(m.encoder(x)))
    assert create_simclr_model(n_hidden=64, n_out=16).head[2].out_features == 16

def test_classifier_and_splitter(enc):
    c = create_classifier(enc, n_out=7)
    assert c.encoder is enc and isinstance(c.head, nn.Linear) and c.head.out_features == 7
    g = classifier_splitter(c)
    assert len(g) == 2
    assert {id(p) for p in g[0]} == {id(p) for p in enc.parameters()}
    assert {id(p) for p in g[1]} == {id(c.head.weight), id(c.head.bias)}
    assert all(p.requires_grad for p in c.parameters())

def test_encoder_without_num_features():
    with pytest.raises(ValueError, match='num_features'): create_simclr_model(nn.Flatten())

def test_save_load_roundtrip(tmp_path, enc):
    m = create_simclr_model(enc)
    x = torch.randn(2, 3, 32, 32)
    save_encoder(m, tmp_path/'e.safetensors', stats=((0.1, 0.2, 0.3), (0.4, 0.5, 0.6)), recipe={'preset': 'smoke', 'epochs': 1})
    info = encoder_info(tmp_path/'e.safetensors')
    assert (info['arch'], info['cifar_stem'], info['num_features']) == ('resnet18', True, 512)
    assert info['mean'] == [0.1, 0.2, 0.3] and info['std'] == [0.4, 0.5, 0.6] and info['recipe'] == {'preset': 'smoke', 'epochs': 1}
    sd = m.encoder.state_dict()
    torch.save(sd, tmp_path/'e.pth')                       # older files: weights only
    torch.save(m.state_dict(), tmp_path/'full.pth')
    torch.save({'model': m.state_dict(), 'opt': {}}, tmp_path/'learner.pth')
    for f in ['e.safetensors', 'e.pth', 'full.pth', 'learner.pth']:
        e2 = load_encoder(tmp_path/f)
        torch.testing.assert_close(e2.eval()(x), enc.eval()(x))

@pytest.mark.parametrize('arch,stem', [('resnet34', False), ('resnet18', True), ('mobilenetv3_small_050', False)])
def test_any_timm_arch_from_file_alone(tmp_path, arch, stem):
    m = build_encoder(arch, stem).eval()
    save_encoder(m, tmp_path/'e.safetensors')
    m2 = load_encoder(tmp_path/'e.safetensors').eval()
    x = torch.randn(2, 3, 32, 32)
    assert type(m2) is type(m) and encoder_info(tmp_path/'e.safetensors')['cifar_stem'] == stem
    torch.testing.assert_close(m2(x), m(x))

def test_plain_timm_loads_the_file_offline(tmp_path, monkeypatch):
    "Without the CIFAR stem the file is a timm checkpoint: timm loads it by itself, reading the local file, no network"
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    m = build_encoder('resnet18').eval()
    save_encoder(m, tmp_path/'e.safetensors')
    t = timm.create_model('resnet18', pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path/'e.safetensors')), num_classes=0).eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(t(x), m(x))

def test_save_refuses_other_names(tmp_path, enc):
    with pytest.raises(ValueError, match=r'name it \*\.safetensors'): save_encoder(enc, tmp_path/'e.pth')
    assert not (tmp_path/'e.pth').exists()

def _one_line(path, match, encoder=None):
    with pytest.raises(ValueError, match=match) as e: load_encoder(path, encoder)
    assert '\n' not in str(e.value), str(e.value)

def test_load_errors(tmp_path, enc):
    with pytest.raises(FileNotFoundError, match='No encoder checkpoint'): load_encoder(tmp_path/'missing.safetensors')
    save_encoder(enc, tmp_path/'e.safetensors')
    good = (tmp_path/'e.safetensors').read_bytes()
    for n in (5, 5000, len(good) - 1):
        (tmp_path/'trunc.safetensors').write_bytes(good[:n])
        _one_line(tmp_path/'trunc.safetensors', 'not a readable safetensors file')
    (tmp_path/'flip.safetensors').write_bytes(good[:-100] + bytes([good[-100] ^ 1]) + good[-99:])
    _one_line(tmp_path/'flip.safetensors', 'do not match the checksum')
    (tmp_path/'text.safetensors').write_text('hello')
    _one_line(tmp_path/'text.safetensors', 'not a readable safetensors file')
    # metadata edited to name another architecture, or one timm does not know
    sd, meta = load_file(tmp_path/'e.safetensors'), safe_open(tmp_path/'e.safetensors', 'pt').metadata()
    save_file(sd, tmp_path/'other.safetensors', {**meta, 'arch': 'resnet34'})
    _one_line(tmp_path/'other.safetensors', r'another architecture \(resnet34 with the CIFAR stem, not ResNet\).*missing keys')
    save_file(sd, tmp_path/'unknown.safetensors', {**meta, 'arch': 'no_such_net'})
    _one_line(tmp_path/'unknown.safetensors', "names the architecture 'no_such_net', which timm cannot build")
    save_file(sd, tmp_path/'foreign.safetensors')
    _one_line(tmp_path/'foreign.safetensors', 'without fastai_simclr metadata')
    _one_line(tmp_path/'e.safetensors', 'made for resnet18 with the CIFAR stem, not for the resnet34', timm.create_model('resnet34', num_classes=0))
    _one_line(tmp_path/'other.safetensors', 'made for resnet34 with the CIFAR stem, not for the resnet18 with the CIFAR stem', cifar_resnet18())
    _one_line(tmp_path/'e.safetensors', 'unexpected keys', nn.Conv2d(3, 64, 3, padding=1, bias=False))
    # older .pth files
    torch.save(enc.state_dict(), tmp_path/'e.pth')
    (tmp_path/'trunc.pth').write_bytes((tmp_path/'e.pth').read_bytes()[:5000])
    _one_line(tmp_path/'trunc.pth', 'not a readable torch checkpoint')
    (tmp_path/'text.pth').write_text('hello')
    _one_line(tmp_path/'text.pth', 'not a readable torch checkpoint')
    torch.save([1, 2], tmp_path/'list.pth')
    _one_line(tmp_path/'list.pth', 'state dict')
    torch.save(timm.create_model('resnet18', num_classes=0).state_dict(), tmp_path/'imnet.pth')
    _one_line(tmp_path/'imnet.pth', r'shape mismatch.*conv1.weight')

def _bns(m): return {n: mod for n, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d)}

def test_zero_init_last_default():
    "timm's default: the last BN of each of the 8 residual blocks starts at weight 0, every other BN at 1"
    bns = _bns(cifar_resnet18())
    zero = sorted(n for n, b in bns.items() if (b.weight == 0).all())
    assert zero == sorted(f'layer{i}.{j}.bn2' for i in range(1, 5) for j in range(2))
    assert all((b.weight == 1).all() for n, b in bns.items() if n not in zero)

def _original_encoder():
    "The original's encoder: torchvision's resnet18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), no fc"
    import torchvision
    m = torchvision.models.resnet18()
    m.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    m.maxpool, m.fc = nn.Identity(), nn.Identity()
    return m

def test_init_matches_torchvision_without_zero_init_last():
    torch.manual_seed(0)
    ours, orig = cifar_resnet18(zero_init_last=False), _original_encoder()
    assert not any((b.weight == 0).any() for b in _bns(ours).values())
    a, b = ours.state_dict(), orig.state_dict()
    assert sorted(a) == sorted(b) and all(a[k].shape == b[k].shape for k in a)
    n_conv = 0
    for k in a:
        if a[k].ndim == 4:   # conv weights: the same distributions
            n_conv += 1
            assert abs(a[k].std() / b[k].std() - 1) < 0.05, k
            assert abs(a[k].mean()) < 0.1 * a[k].std() and abs(b[k].mean()) < 0.1 * b[k].std(), k
            if k != 'conv1.weight':   # kaiming normal, fan_out, relu gain
                fan_out = a[k].shape[0] * a[k].shape[2] * a[k].shape[3]
                assert abs(a[k].std() / (2 / fan_out) ** 0.5 - 1) < 0.05, k
        else: assert torch.equal(a[k], b[k]), k   # BN weight 1, bias 0, running mean 0, var 1, counters 0
    assert n_conv == 20
    for w in (a['conv1.weight'], b['conv1.weight']):   # the replaced stem: nn.Conv2d's default U(-1/sqrt(27), 1/sqrt(27))
        assert w.abs().max() <= 27 ** -0.5 and w.abs().max() > 0.9 * 27 ** -0.5
    assert [(m.eps, m.momentum) for m in _bns(ours).values()] == [(m.eps, m.momentum) for m in _bns(orig).values()]
    # the same network: with torchvision's weights loaded, ours computes the same features
    ours.load_state_dict(b)
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(ours.eval()(x), orig.eval()(x), atol=1e-5, rtol=1e-5)
    ours.train(); orig.train()
    torch.testing.assert_close(ours(x), orig(x), atol=1e-5, rtol=1e-5)
