"The label-efficiency sweep on real CIFAR-10 (smoke preset): bookkeeping of fractions and folds, bad input, the files, resume, refusal of other settings"
import json, re
from pathlib import Path
import numpy as np
import pytest

from conftest import run_cli as cli, run_main
import fastai_simclr.recipes, fastai_simclr.sweep
from fastai_simclr.recipes import get_preset
from fastai_simclr.sweep import sweep, sweep_plan, sweep_settings, fold_indices, ARMS

def test_fractions_labels_and_folds(cifar):
    "Labels per fraction, folds per fraction under max_fold_labels, and the fold split `run_fold` trains on"
    p = get_preset('smoke', n_splits=4, bs=4)
    plan = sweep_plan(cifar, p, [0.0032, 0.0008, 0.0016], max_fold_labels=160)
    assert [(it['frac'], it['labels'], it['folds'], it['folder']) for it in plan] == \
           [(0.0008, 40, [0, 1, 2, 3], 'frac0.0008'), (0.0016, 80, [0, 1], 'frac0.0016'), (0.0032, 160, [0, 1], 'frac0.0032')]
    assert [it['preset'].folds for it in plan] == [(0, 1, 2, 3), (0, 1), (0, 1)] and plan[1]['preset'].frac == 0.0016
    assert [len(sweep_plan(cifar, p, [0.0008, 0.0016], max_fold_labels=m)[1]['folds']) for m in (None, 0, 240, 320, 10**6)] == [4, 4, 3, 4, 4]
    for f in plan[0]['folds']:   # the folds partition the subset: every labeled image validated once
        trn, val = fold_indices(cifar, plan[0]['preset'], f)
        assert len(trn) == 30 and len(val) == 10 and not set(trn) & set(val)
    vals = np.concatenate([fold_indices(cifar, plan[0]['preset'], f)[1] for f in range(4)])
    assert sorted(vals) == sorted(fastai_simclr.recipes.labeled_indices(cifar, plan[0]['preset']))
    assert sweep_settings(get_preset('cpu1h-sweep')) == ((0.008, 0.02, 0.04, 0.08), 3_000)

@pytest.mark.parametrize('fracs,frag', [
    ('0,0.5', '--fracs: every fraction must be a number in (0, 1], got 0'),
    ('0.5,1.01', 'got 1.01'),
    ('-0.1', 'got -0.1'),
    ('0.1,x', "--fracs: cannot read 'x' as a number"),
    ('0.1,0.1', '--fracs: 0.1 is given twice'),
    ('1,1.0', '--fracs: 1 is given twice'),
    ('0.0001', 'fraction 0.0001: cannot draw a stratified 0.0001 of 50000 labels'),   # checked against the data, before anything trains
    ('0.0006', 'fraction 0.0006: batch size 16 is larger than the 15 labeled training images of a fold'),
])
def test_bad_fractions_refused(tmp_path, fracs, frag):
    r = run_main('sweep', '--preset', 'smoke', '--device', 'cpu', '--out', str(tmp_path/'o'), '--fracs', fracs)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('fastai-simclr: error: ') and frag in lines[0], r.stderr[-2000:]
    assert not (tmp_path/'o').exists()

def test_sweep_cli_reuses_an_encoder_resumes_and_refuses_other_settings(smoke_run, tmp_path):
    "`fastai-simclr sweep` with the encoder of a reproduce folder: the files, a second run that redoes nothing, other settings refused"
    out, args = tmp_path/'sweep', ('sweep', '--preset', 'smoke', '--device', 'cpu', '--encoder', str(smoke_run[0]))
    r = cli(*args, '--out', str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert '[pretrain] none: every fraction uses the given encoder' in r.stdout and not (out/'pretrain').exists()
    assert re.search(r'^ +40 labels: test accuracy baseline [\d.]+%, fine-tune [\d.]+%, linear probe [\d.]+%; gain [-+][\d.]+ points', r.stdout, re.M)
    for f in ('config.json', 'sweep.json', 'report.md', 'sweep.png', 'frac0.0008/probe/result.json', 'frac0.0016/finetune/fold1/result.json'):
        assert (out/f).stat().st_size > 0, f
    res = json.loads((out/'sweep.json').read_text())
    assert res['encoder'] == str(smoke_run[0]/'pretrain'/'encoder.safetensors') and res['fracs'] == [0.0008, 0.0016]
    assert re.fullmatch(r'[0-9a-f]{40}', res['code']['commit']) and res['command'].startswith('fastai-simclr sweep --preset smoke')
    assert set(res['seconds']) == {'pretrain', '40 labels', '80 labels', 'total'} and res['preset']['name'] == 'smoke'
    for r_ in res['fractions']:
        for k in ARMS:
            a = r_['arms'][k]
            assert a['folds'] == [0, 1] and len(a['valid_accuracy']) == len(a['test_accuracy']) == 2
            assert a['test']['mean'] == pytest.approx(np.mean(a['test_accuracy'])) and a['test']['low'] <= a['test']['mean'] <= a['test']['high']
        g = r_['gain']['test_accuracy']
        assert g['diffs'] == pytest.approx(np.subtract(r_['arms']['finetune']['test_accuracy'], r_['arms']['baseline']['test_accuracy']))
    md = (out/'report.md').read_text()
    assert '| 40 | 0.0008 | 2 |' in md and '| 80 | 0.0016 | 2 |' in md and 'the given encoder' in md
    # the same command again: nothing trains, no phase result is rewritten
    mtimes = {f: f.stat().st_mtime_ns for f in out.rglob('result.json')}
    assert len(mtimes) == 2 * (1 + 2 * 2)
    r2 = run_main(*args, '--out', str(out))   # in this process: it trains nothing
    assert r2.returncode == 0 and 'images/s' not in r2.stdout and r2.stdout.count('finished earlier') == len(mtimes), r2.stderr[-2000:]
    assert {f: f.stat().st_mtime_ns for f in out.rglob('result.json')} == mtimes
    assert json.loads((out/'sweep.json').read_text())['fractions'] == res['fractions']
    # other settings: refused with each difference named, nothing written
    for extra, frag in ((('--fracs', '0.0008'), 'sweep.fracs: [0.0008, 0.0016] there, [0.0008] now'),
                        (('--max-fold-labels', '40'), 'sweep.max_fold_labels: None there, 40 now'),
                        (('--epochs', '1', '--seed', '7'), 'preset.epochs: 2 there, 1 now; seed: 42 there, 7 now')):
        r3 = run_main(*args, '--out', str(out), *extra)
        assert r3.returncode == 2 and frag in r3.stderr, r3.stderr[-2000:]
    assert {f: f.stat().st_mtime_ns for f in out.rglob('result.json')} == mtimes

def test_pretrains_once_and_a_second_call_redoes_nothing(cifar, tmp_path, monkeypatch):
    "Phase executions counted: one pre-training and one fit per fold and arm, features once per image; none on the second call"
    fits, feats = [], []
    fit, pf = fastai_simclr.recipes.fit_resumable, fastai_simclr.sweep.probe_features
    monkeypatch.setattr(fastai_simclr.recipes, 'fit_resumable', lambda learn, *a, **k: fits.append(k['extra']['phase']) or fit(learn, *a, **k))
    monkeypatch.setattr(fastai_simclr.sweep, 'probe_features', lambda enc, x, *a, **k: feats.append(len(x)) or pf(enc, x, *a, **k))
    run = lambda: sweep([0.0016, 0.0008], 'smoke', data=cifar, out=tmp_path/'s', device='cpu', log=lambda s: None)
    res = run()
    assert sorted(fits) == ['baseline'] * 4 + ['finetune'] * 4 + ['pretrain']
    lab = lambda f: set(fastai_simclr.recipes.labeled_indices(cifar, get_preset('smoke', frac=f)))
    assert sum(feats) == len(lab(0.0008) | lab(0.0016)) + 32   # each labeled image of either fraction and each test image, once
    assert (tmp_path/'s'/'pretrain'/'encoder.safetensors').exists() and res['pretrain']['images'] == 64
    fits.clear(); feats.clear()
    assert run()['fractions'] == res['fractions'] and fits == [] and feats == []
