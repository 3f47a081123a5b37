"The main job end to end on real CIFAR-10 (smoke preset): outputs, report, resume after kill -9, determinism"
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

from conftest import run_cli as cli

def histories(res):
    yield 'pretrain', res['pretrain']['history']
    for kind in ('baseline', 'finetune'):
        for r in res['folds'][kind]: yield f"{kind}{r['fold']}", r['history']

def test_smoke_end_to_end(smoke_run):
    out, r = smoke_run
    assert 'validation accuracy' in r.stdout and '[pretrain] done' in r.stdout
    for f in ('results.json', 'report.md', 'accuracy.png', 'loss.png', 'pretrain_loss.png', 'augmentations.png', 'config.json'):
        assert (out/f).stat().st_size > 0, f
    res = json.loads((out/'results.json').read_text())
    assert res['preset']['name'] == 'smoke' and res['seed'] == 42
    assert set(res['versions']) >= {'torch', 'fastai', 'timm'} and res['device'].startswith('cpu')
    for name, h in histories(res): assert [row['epoch'] for row in h] == list(range(len(h))), name
    assert len(res['pretrain']['history']) == res['preset']['pretrain_epochs']
    assert [r['fold'] for r in res['folds']['baseline']] == [0, 1]
    for kind in ('baseline', 'finetune'):
        assert 0 <= res[kind]['test_accuracy']['mean'] <= 1 and len(res[kind]['test_accuracy']['per_fold']) == 2
    assert 0 <= res['knn']['random'] <= 1 and 0 <= res['knn']['pretrained'] <= 1
    md = (out/'report.md').read_text()
    assert '| validation accuracy, final epoch |' in md and '76% / 82%' in md and 'k-NN' in md
    assert (out/'pretrain'/'encoder.pth').exists()
    # a second run with the same folder redoes nothing
    r2 = cli('reproduce', '--preset', 'smoke', '--out', str(out), '--device', 'cpu')
    assert r2.returncode == 0 and json.loads((out/'results.json').read_text())['folds'] == res['folds']

def test_encoder_reuse_skips_pretraining(tmp_path):
    first = tmp_path/'a'
    assert cli('pretrain', '--preset', 'smoke', '--out', str(first), '--device', 'cpu').returncode == 0
    enc = first/'pretrain'/'encoder.pth'
    r = cli('reproduce', '--preset', 'smoke', '--out', str(tmp_path/'b'), '--encoder', str(enc), '--device', 'cpu', '--epochs', '1', '--folds', '0')
    assert r.returncode == 0, r.stderr
    assert not (tmp_path/'b'/'pretrain').exists()
    res = json.loads((tmp_path/'b'/'results.json').read_text())
    assert res['pretrain']['encoder'] == str(enc) and len(res['folds']['finetune'][0]['history']) == 1

def _run_killed(out, wait_for, extra=()):
    "Start a smoke run and kill -9 it as soon as `wait_for` (a path under `out`) exists"
    p = subprocess.Popen([sys.executable, '-m', 'fastai_simclr.cli', 'reproduce', '--preset', 'smoke', '--out', str(out), '--device', 'cpu', *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (out/wait_for).exists():
        if p.poll() is not None or time.time() - t0 > 300: break
        time.sleep(0.05)
    if p.poll() is None: p.send_signal(signal.SIGKILL)
    p.wait()
    return p.returncode

def test_kill9_and_resume(smoke_run, tmp_path):
    out = tmp_path/'run'
    # killed in pre-training just after its first checkpoint, then in the baseline's first fold, then in the fine-tune
    assert _run_killed(out, 'pretrain/checkpoint.pth') == -signal.SIGKILL
    assert _run_killed(out, 'baseline/fold0/checkpoint.pth') == -signal.SIGKILL
    assert _run_killed(out, 'finetune/fold0/checkpoint.pth') == -signal.SIGKILL
    assert not (out/'results.json').exists()
    r = cli('reproduce', '--preset', 'smoke', '--out', str(out), '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    res = json.loads((out/'results.json').read_text())
    ref = json.loads((smoke_run[0]/'results.json').read_text())
    for (name, h), (_, h_ref) in zip(histories(res), histories(ref)):
        assert [row['epoch'] for row in h] == [0, 1], (name, h)        # every epoch exactly once
        # the schedule position survived, and the resumed run repeats the uninterrupted one exactly
        assert [(row['lr'], row['train_loss'], row.get('valid_loss')) for row in h] == \
               [(row['lr'], row['train_loss'], row.get('valid_loss')) for row in h_ref], name
    for name, h in histories(res):
        if name != 'pretrain': assert [row['lr'] for row in h] == pytest.approx([8e-4, 8e-4*0.9])
    # no temporary checkpoint files left behind
    assert not [f for f in out.rglob('*.tmp')]

def test_deterministic_smoke_runs(smoke_run, tmp_path):
    a, b = smoke_run[0], tmp_path/'b'
    assert cli('reproduce', '--preset', 'smoke', '--out', str(b), '--device', 'cpu').returncode == 0
    ra, rb = (json.loads((o/'results.json').read_text()) for o in (a, b))
    for (na, ha), (nb, hb) in zip(histories(ra), histories(rb)):
        assert [(r['train_loss'], r.get('valid_loss')) for r in ha] == [(r['train_loss'], r.get('valid_loss')) for r in hb], na
    assert ra['knn'] == {**rb['knn'], 'seconds': ra['knn']['seconds']}
    for kind in ('baseline', 'finetune'): assert ra[kind]['test_accuracy'] == rb[kind]['test_accuracy']
    # the label subset and the folds are the same too
    assert [(r['n_train'], r['n_valid']) for r in ra['folds']['baseline']] == [(r['n_train'], r['n_valid']) for r in rb['folds']['baseline']]
