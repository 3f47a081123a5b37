"Encoder files in use: committed results regenerate their report without an encoder, old run folders, bad files at the command line"
import json, shutil
from pathlib import Path
import pytest, torch
from fastai_simclr.model import cifar_resnet18, save_encoder, load_encoder
from fastai_simclr.report import write_report
from fastai_simclr.sweep import find_encoder
from fastai_simclr.share import plot_neighbours, CARD_MARK
from fastai_simclr import cli

def _retag(f, arch):
    "Edit the file's metadata to name another architecture"
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
    sd, meta = load_file(f), safe_open(f, 'pt').metadata()
    save_file(sd, f, {**meta, 'arch': arch})

RESULTS = Path(__file__).resolve().parent.parent/'results'
RUNS = sorted(f.parent for f in RESULTS.glob('*/results.json'))

def test_there_are_committed_runs(): assert len(RUNS) >= 2

def _has_pictures(run): return all((run/f).is_file() for f in ('neighbours.png', 'embedding.png'))

def test_a_committed_run_shows_what_the_encoder_sees():
    "At least one committed run holds the nearest-neighbour and embedding-map pictures, and its report shows them"
    shown = [r for r in RUNS if _has_pictures(r) and '](neighbours.png)' in (r/'report.md').read_text()]
    assert shown, [r.name for r in RUNS]

@pytest.mark.parametrize('run', RUNS, ids=lambda p: p.name)
def test_committed_result_regenerates_without_its_encoder(run, tmp_path, cifar):
    "No encoder file is committed: the report is written again from results.json; pictures drawn when the run ended are kept, else it says they need the encoder"
    out = tmp_path/run.name; shutil.copytree(run, out, ignore=shutil.ignore_patterns('*.safetensors', '*.pth'))
    res = json.loads((out/'results.json').read_text())
    write_report(res, out, cifar)
    md = (out/'report.md').read_text()
    if _has_pictures(run):
        assert '](neighbours.png)' in md and '](embedding.png)' in md and 'pictures need' not in md
        for f in ('neighbours.png', 'embedding.png'): assert (out/f).read_bytes() == (run/f).read_bytes()   # kept, not redrawn
    else:
        assert 'pictures need the pre-trained encoder file' in md and '](neighbours.png)' not in md
        assert not (out/'neighbours.png').exists() and not (out/'embedding.png').exists()
    assert json.loads((out/'results.json').read_text()) == res

def test_old_run_folder_with_encoder_pth(tmp_path):
    "A run folder from before safetensors holds pretrain/encoder.pth: it is still found and loads (weights only)"
    enc = cifar_resnet18().eval()
    (tmp_path/'pretrain').mkdir(); torch.save(enc.state_dict(), tmp_path/'pretrain'/'encoder.pth')
    f = find_encoder(tmp_path)
    assert f.name == 'encoder.pth'
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_encoder(f).eval()(x), enc(x))
    save_encoder(enc, tmp_path/'pretrain'/'encoder.safetensors')   # a newer file beside it is preferred
    assert find_encoder(tmp_path).name == 'encoder.safetensors'

@pytest.mark.parametrize('content,why', [(b'hello', 'not a readable safetensors file'), (None, 'do not match the checksum'),
                                         ('arch', 'was made for resnet34 with the CIFAR stem, not for the resnet18 with the CIFAR stem')])
def test_cli_bad_encoder_one_line(tmp_path, capsys, content, why):
    f = tmp_path/'e.safetensors'
    if content == 'arch': save_encoder(cifar_resnet18(), f); _retag(f, 'resnet34')
    else:
        save_encoder(cifar_resnet18(), f)
        b = f.read_bytes()
        m = len(b) // 2
        f.write_bytes(content if content is not None else b[:m] + bytes([b[m] ^ 0xff]) + b[m+1:])
    rc = cli.main(['reproduce', '--preset', 'smoke', '--encoder', str(f), '--device', 'cpu', '--out', str(tmp_path/'run')])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith('fastai-simclr: error: ') and why in err and len(err.splitlines()) == 1, err
    assert not (tmp_path/'run').exists()   # nothing ran

def test_neighbours_among_own_images_exclude_self(tmp_path):
    "Without a bank the queries' own set is searched and no query is its own neighbour"
    torch.manual_seed(0); x = (torch.rand(20, 3, 16, 16) * 255).to(torch.uint8)
    x[10] = x[0]   # a duplicate of query 0: its nearest neighbour
    from fastai_simclr.share import nearest_neighbours
    idx = nearest_neighbours(cifar_resnet18(), x[:3], x, k=2, exclude_self=True)
    assert idx[0, 0] == 10 and not (idx == torch.arange(3)[:, None]).any()
    fig = plot_neighbours({'a': cifar_resnet18()}, x, n_query=3, k=2, fname=tmp_path/'n.png')
    assert (tmp_path/'n.png').stat().st_size > 5000

def test_run_pictures_of_a_preset_whose_knn_uses_every_image(tmp_path, cifar):
    "The seed preset's k-NN bank and test set are every image (`None`): its pictures take at most 500 and 400 of them"
    from fastai_simclr.recipes import get_preset, preset_encoder
    from fastai_simclr.report import plot_run_pictures
    p = get_preset('seed'); enc = tmp_path/'encoder.safetensors'
    assert p.knn_bank_n is None and p.knn_test_n is None
    save_encoder(preset_encoder(p), enc)
    files = plot_run_pictures({'preset': p.to_dict(), 'seed': 0}, tmp_path, cifar, enc)
    assert [f.name for f in files] == ['neighbours.png', 'embedding.png'] and all(f.stat().st_size > 0 for f in files)
