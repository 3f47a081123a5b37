"""Crash safety, deterministically: a real `fastai-simclr` run is killed with SIGKILL at named fault points
(`utils.fault_point`, through `$FASTAI_SIMCLR_KILL_AT`), each time with its phase unfinished; the same command then
resumes, and the end result equals that of an uninterrupted run."""
import json, os, signal, subprocess, sys
from pathlib import Path
import pytest
import torch

from conftest import run_cli as cli
from fastai_simclr.checkpoint import LOCK_NAME

def killed_at(point:str, *args):
    "Run the CLI with `FASTAI_SIMCLR_KILL_AT=point` and assert it was killed there (SIGKILL, as `kill -9`)"
    r = subprocess.run([sys.executable, '-m', 'fastai_simclr.cli', *args], capture_output=True, text=True, timeout=900,
                       env={**os.environ, 'FASTAI_SIMCLR_KILL_AT': point})
    assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-3000:])

def temps(d:Path): return sorted(str(p.relative_to(d)) for p in Path(d).rglob('*.tmp'))
def epochs_saved(d:Path): return torch.load(d/'checkpoint.pth', weights_only=True)['epoch']
def curve(h): return [(r['epoch'], r['lr'], r['train_loss'], r.get('valid_loss'), r.get('accuracy')) for r in h]
def same_weights(a:Path, b:Path):
    from safetensors.torch import load_file
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)

PRETRAIN = ('pretrain', '--preset', 'smoke', '--device', 'cpu')

@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    "An uninterrupted `pretrain --preset smoke` (2 epochs)"
    out = tmp_path_factory.mktemp('uninterrupted')/'run'
    r = cli(*PRETRAIN, '--out', str(out))
    assert r.returncode == 0 and 'encoder saved to' in r.stdout, r.stderr[-3000:]
    return out

def test_pretrain_killed_at_each_point_then_resumed(pretrained, tmp_path):
    out = tmp_path/'run'; d = out/'pretrain'; args = (*PRETRAIN, '--out', str(out))
    # 1. just after the checkpoint of epoch 0: one epoch saved, the phase unfinished
    killed_at('checkpoint.saved:1', *args)
    assert epochs_saved(d) == 1 and not (d/'result.json').exists() and not (d/'encoder.safetensors').exists()
    # 2. resumed, killed in the middle of writing epoch 1's checkpoint: the previous checkpoint intact, its temporary file left
    killed_at('atomic_write.mid.checkpoint.pth:1', *args)
    assert epochs_saved(d) == 1 and len(temps(d)) == 1 and not (d/'result.json').exists()
    # 3. resumed, killed in the middle of writing the encoder, after the last checkpoint
    killed_at('atomic_write.mid.encoder.safetensors:1', *args)
    assert epochs_saved(d) == 2 and not (d/'encoder.safetensors').exists() and not (d/'result.json').exists()
    assert len(temps(d)) == 1 and temps(d)[0].startswith('.encoder.safetensors.')   # step 2's temporary file was cleaned at the start
    # 4. resumed, killed between the last checkpoint (and the encoder) and result.json
    killed_at('phase.before_result:1', *args)
    assert (d/'encoder.safetensors').exists() and not (d/'result.json').exists() and temps(out) == []
    # 5. resumed, killed in the middle of writing result.json
    killed_at('atomic_write.mid.result.json:1', *args)
    assert not (d/'result.json').exists() and len(temps(d)) == 1
    # 6. resumed to the end: the same numbers and weights as the uninterrupted run, nothing left behind
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    res, ref = (json.loads((o/'pretrain'/'result.json').read_text()) for o in (out, pretrained))
    assert [h['epoch'] for h in res['history']] == [0, 1]
    assert curve(res['history']) == curve(ref['history'])
    assert same_weights(d/'encoder.safetensors', pretrained/'pretrain'/'encoder.safetensors')
    assert temps(out) == [] and not (out/LOCK_NAME).exists()

def test_fold_killed_then_resumed(pretrained, tmp_path):
    "The baseline and fine-tune phases of `reproduce` (fold 0, the encoder above): killed after an epoch and before a result"
    enc = pretrained/'pretrain'/'encoder.safetensors'
    args = lambda out: ('reproduce', '--preset', 'smoke', '--device', 'cpu', '--encoder', str(enc), '--folds', '0', '--out', str(out))
    ref = tmp_path/'ref'
    r = cli(*args(ref)); assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path/'run'
    killed_at('checkpoint.saved:1', *args(out))          # baseline fold 0, after epoch 0
    b = out/'baseline'/'fold0'
    assert epochs_saved(b) == 1 and not (b/'result.json').exists()
    killed_at('phase.before_result:1', *args(out))        # baseline fold 0 trained and tested, its result not written
    assert epochs_saved(b) == 2 and not (b/'result.json').exists()
    killed_at('checkpoint.saved:2', *args(out))           # the baseline, fully trained, saves nothing more: the fine-tune's epoch 1
    f = out/'finetune'/'fold0'
    assert (b/'result.json').exists() and epochs_saved(f) == 2 and not (f/'result.json').exists()
    assert json.loads((out/'results.json').read_text())['status'] == 'partial'   # the phases that finished, not the whole run
    r = cli(*args(out)); assert r.returncode == 0, r.stderr[-3000:]
    a, e = (json.loads((o/'results.json').read_text()) for o in (out, ref))
    for kind in ('baseline', 'finetune'):
        assert curve(a['folds'][kind][0]['history']) == curve(e['folds'][kind][0]['history']), kind
        assert (a['folds'][kind][0]['test_accuracy'], a['folds'][kind][0]['test_loss']) == \
               (e['folds'][kind][0]['test_accuracy'], e['folds'][kind][0]['test_loss']), kind
    assert temps(out) == [] and not (out/LOCK_NAME).exists()
