"`fastai-simclr pretrain --images DIR --size N` on a folder of mixed-size PNG/JPEG files, from the shell, then fine_tune from its encoder"
import json, subprocess, sys
import numpy as np, PIL.Image, pytest, torch
from fastai.vision.all import DataBlock, ImageBlock, CategoryBlock, get_image_files, parent_label, RandomSplitter, Resize

def _photos(root, n=40):
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root/('cats' if i % 2 else 'dogs'); d.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (20 + i, 60 - i, 3), dtype=np.uint8)
        im = PIL.Image.fromarray(arr)
        if i % 7 == 3: im = im.convert('L')                  # a grayscale file among colour ones
        im.save(d/f'{i}.{"png" if i % 3 else "jpg"}')
    return root

def _cli(*args):
    return subprocess.run([sys.executable, '-m', 'fastai_simclr.cli', *map(str, args)], capture_output=True, text=True, timeout=600)

def test_pretrain_images_then_fine_tune(tmp_path):
    photos, out = _photos(tmp_path/'photos'), tmp_path/'run'
    r = _cli('pretrain', '--images', photos, '--size', 40, '--preset', 'smoke', '--out', out, '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    assert 'encoder saved to' in r.stdout and (out/'pretrain'/'encoder.safetensors').is_file()
    card = (out/'pretrain'/'README.md').read_text()
    assert card.startswith('---\n') and 'image files under a folder named `photos`' in card, card[:500]
    assert (out/'pretrain'/'neighbours.png').stat().st_size > 5000   # neighbours among the user's own images
    res = json.loads((out/'pretrain'/'result.json').read_text())
    assert res['images'] == 36 and len(res['history']) == 2
    again = _cli('pretrain', '--images', photos, '--size', 40, '--preset', 'smoke', '--out', out, '--device', 'cpu')
    assert again.returncode == 0 and 'finished earlier' in again.stdout
    other = _cli('pretrain', '--images', photos, '--size', 48, '--preset', 'smoke', '--out', out, '--device', 'cpu')
    assert other.returncode == 2 and other.stderr.startswith('fastai-simclr: error:') and 'data.size: 40 there, 48 now' in other.stderr
    from fastai_simclr.learner import classifier_learner
    dls = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files, get_y=parent_label,
                    splitter=RandomSplitter(0.25, seed=0), item_tfms=Resize(40)).dataloaders(photos, bs=8, device='cpu', num_workers=0)
    learn = classifier_learner(dls, out/'pretrain'/'encoder.safetensors')
    learn.fine_tune(1, 1e-3)
    assert len(learn.recorder.values) == 1 and np.isfinite(learn.recorder.values[-1]).all()

def test_pretrain_images_errors(tmp_path, capsys):
    "In this process (`cli.main`, what the shell command runs), so that four mistakes cost seconds"
    from fastai_simclr import cli
    photos = _photos(tmp_path/'photos', n=6)
    for args, msg in [(['--images', tmp_path/'none'], 'no such folder'), (['--images', photos, '--size', 3], 'size must be'),
                      (['--images', photos], 'fewer than one batch of 16'), (['--size', 64], '--size goes with --images')]:
        rc = cli.main(['pretrain', '--preset', 'smoke', '--out', str(tmp_path/'o'), *map(str, args)])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path/'o').exists()
