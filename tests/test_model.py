"Encoder stem, timm API, heads, splitter and `load_encoder` errors"
import pytest, torch, timm
from torch import nn
from fastai_simclr.model import *

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
    save_encoder(m, tmp_path/'e.pth')
    torch.save(m.state_dict(), tmp_path/'full.pth')
    torch.save({'model': m.state_dict(), 'opt': {}}, tmp_path/'learner.pth')
    for f in ['e.pth', 'full.pth', 'learner.pth']:
        e2 = load_encoder(tmp_path/f)
        torch.testing.assert_close(e2.eval()(x), enc.eval()(x))

def test_load_errors(tmp_path, enc):
    with pytest.raises(FileNotFoundError, match='No encoder checkpoint'): load_encoder(tmp_path/'missing.pth')
    save_encoder(enc, tmp_path/'e.pth')
    (tmp_path/'trunc.pth').write_bytes((tmp_path/'e.pth').read_bytes()[:5000])
    with pytest.raises(ValueError, match='not a readable torch checkpoint'): load_encoder(tmp_path/'trunc.pth')
    (tmp_path/'text.pth').write_text('hello')
    with pytest.raises(ValueError, match='not a readable torch checkpoint'): load_encoder(tmp_path/'text.pth')
    torch.save([1, 2], tmp_path/'list.pth')
    with pytest.raises(ValueError, match='state dict'): load_encoder(tmp_path/'list.pth')
    torch.save(timm.create_model('resnet18', num_classes=0).state_dict(), tmp_path/'imnet.pth')
    with pytest.raises(ValueError, match=r'shape mismatch.*conv1.weight'): load_encoder(tmp_path/'imnet.pth')
    with pytest.raises(ValueError, match='missing keys'): load_encoder(tmp_path/'e.pth', timm.create_model('resnet34', num_classes=0))
    with pytest.raises(ValueError, match='unexpected keys'): load_encoder(tmp_path/'e.pth', nn.Conv2d(3, 64, 3, padding=1, bias=False))
