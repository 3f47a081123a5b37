"The main job end to end on real CIFAR-10 (smoke preset): outputs, report, what it says while it runs, resume after kill -9, determinism"
import json, os, re, signal, subprocess, sys, time
from pathlib import Path
import pytest

from conftest import run_cli as cli
from fastai_simclr.recipes import get_preset
from fastai_simclr.schedules import ExpDecayLR

def histories(res):
    yield 'pretrain', res['pretrain']['history']
    for kind in ('baseline', 'finetune'):
        for r in res['folds'][kind]: yield f"{kind}{r['fold']}", r['history']

def test_smoke_end_to_end(smoke_run):
    out, r = smoke_run
    # it says what each phase does before it starts, how fast it goes, when it ends; then the headline and the report's path
    lines = r.stdout.splitlines()
    idx = lambda pat: next(i for i,l in enumerate(lines) if re.search(pat, l))
    assert idx(r'^\[data\] reading CIFAR-10') < idx(r'\[data\] 50,000 training and 10,000 test images ready')
    assert idx(r'\[pretrain\] SimCLR pre-training .* 64 training images .* 2 epochs') < idx(r'\[pretrain\] [\d,]+ views/s') < idx(r'\[pretrain\] done in')
    assert idx(r'\[baseline fold 0\] a ResNet-18 from scratch .* 2 epochs') < idx(r'\[baseline fold 0\] done')
    assert idx(r'\[probe\] random encoder') < idx(r'\[finetune fold 1\] done') < idx(r'\[report\] .*report.md')
    assert 'validation accuracy (test:' in r.stdout and re.search(r'Validation accuracy: the fine-tune is .* interval', r.stdout)
    for f in ('results.json', 'report.md', 'accuracy.png', 'loss.png', 'train_loss.png', 'pretrain_loss.png', 'augmentations.png',
              'supervised_augmentations.png', 'config.json', 'probe/result.json', 'knn/result.json'):
        assert (out/f).stat().st_size > 0, f
    res = json.loads((out/'results.json').read_text())
    assert res['preset']['name'] == 'smoke' and res['seed'] == 42
    assert set(res['versions']) >= {'torch', 'fastai', 'timm'} and res['device'].startswith('cpu')
    assert re.fullmatch(r'[0-9a-f]{40}', res['code']['commit']) and isinstance(res['code']['dirty'], bool)
    for name, h in histories(res): assert [row['epoch'] for row in h] == list(range(len(h))), name
    assert len(res['pretrain']['history']) == res['preset']['pretrain_epochs'] and res['pretrain']['images'] == 64
    assert [r['fold'] for r in res['folds']['baseline']] == [0, 1]
    for kind in ('baseline', 'finetune'):
        assert 0 <= res[kind]['test_accuracy']['mean'] <= 1 and len(res[kind]['test_accuracy']['per_fold']) == 2
    assert 0 <= res['knn']['random'] <= 1 and 0 <= res['knn']['pretrained'] <= 1
    assert 0 <= res['probe']['pretrained']['accuracy'] <= 1 and res['probe']['train_n'] == res['n_labeled'] == 40
    # the paired differences are fine-tune minus baseline on the same fold
    v = res['paired']['test_accuracy']
    assert v['diffs'] == pytest.approx([f['test_accuracy'] - b['test_accuracy'] for b,f in zip(res['folds']['baseline'], res['folds']['finetune'])])
    assert v['low'] <= v['mean'] <= v['high'] and v['n'] == 2
    md = (out/'report.md').read_text()
    for s in ('| validation accuracy, final epoch |', '| training loss, final epoch |', '~0.46 / ~0.22 (training losses)', '76% / 82%',
              'Fine-tune minus baseline, fold by fold', '| test accuracy |', 'k-NN test accuracy', 'linear probe test accuracy',
              res['description'], f"- code: {res['code']['commit'][:12]}"):
        assert s in md, s
    assert (out/'pretrain'/'encoder.safetensors').exists()
    assert (out/'neighbours.png').stat().st_size > 5000 and (out/'embedding.png').stat().st_size > 5000 and '](neighbours.png)' in md
    card = (out/'pretrain'/'README.md').read_text()   # the model card, with the accuracies measured after pre-training
    assert f"| this encoder | {100*res['knn']['pretrained']:.1f}% | {100*res['probe']['pretrained']['accuracy']:.1f}% |" in card
    # a second run with the same folder redoes nothing
    r2 = cli('reproduce', '--preset', 'smoke', '--out', str(out), '--device', 'cpu')
    assert r2.returncode == 0 and json.loads((out/'results.json').read_text())['folds'] == res['folds']
    assert '[pretrain] finished earlier' in r2.stdout and 'views/s' not in r2.stdout

def test_encoder_reuse_skips_pretraining(smoke_run, tmp_path):
    "The encoder another run saved (the shared smoke run's) is fine-tuned without pre-training again"
    enc = smoke_run[0]/'pretrain'/'encoder.safetensors'
    r = cli('reproduce', '--preset', 'smoke', '--out', str(tmp_path/'b'), '--encoder', str(enc), '--device', 'cpu', '--epochs', '1', '--folds', '0')
    assert r.returncode == 0, r.stderr
    assert not (tmp_path/'b'/'pretrain').exists()
    res = json.loads((tmp_path/'b'/'results.json').read_text())
    assert res['pretrain']['encoder'] == str(enc) and len(res['folds']['finetune'][0]['history']) == 1
    assert res['paired']['valid_accuracy'] is None    # one fold: no interval, and the report says so
    assert 'fewer than 2 folds' in (tmp_path/'b'/'report.md').read_text()

def _run_killed(out, wait_for, extra=()):
    "Start a smoke run and kill -9 it as soon as `wait_for` (a path under `out`) exists"
    p = subprocess.Popen([sys.executable, '-m', 'fastai_simclr.cli', 'reproduce', '--preset', 'smoke', '--out', str(out), '--device', 'cpu', *extra],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not (out/wait_for).exists():
        if p.poll() is not None or time.time() - t0 > 600: break
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
    assert json.loads((out/'results.json').read_text())['status'] == 'partial'   # the phases that finished, not the whole run
    r = cli('reproduce', '--preset', 'smoke', '--out', str(out), '--device', 'cpu')
    assert r.returncode == 0, r.stderr
    res = json.loads((out/'results.json').read_text())
    ref = json.loads((smoke_run[0]/'results.json').read_text())
    for (name, h), (_, h_ref) in zip(histories(res), histories(ref)):
        assert [row['epoch'] for row in h] == [0, 1], (name, h)        # every epoch exactly once
        # the schedule position survived, and the resumed run repeats the uninterrupted one exactly
        assert [(row['lr'], row['train_loss'], row.get('valid_loss')) for row in h] == \
               [(row['lr'], row['train_loss'], row.get('valid_loss')) for row in h_ref], name
    p = get_preset('smoke')
    sched = ExpDecayLR(p.lr, p.gamma, p.gamma_after, p.switch_epoch)
    for name, h in histories(res):
        if name != 'pretrain': assert [row['lr'] for row in h] == pytest.approx([sched.lr_at(0), sched.lr_at(1)])
    # no temporary files left behind
    assert not [f for f in out.rglob('*.tmp')]

def test_deterministic_smoke_runs(smoke_run, tmp_path):
    a, b = smoke_run[0], tmp_path/'b'
    assert cli('reproduce', '--preset', 'smoke', '--out', str(b), '--device', 'cpu').returncode == 0
    ra, rb = (json.loads((o/'results.json').read_text()) for o in (a, b))
    for (na, ha), (nb, hb) in zip(histories(ra), histories(rb)):
        assert [(r['train_loss'], r.get('valid_loss')) for r in ha] == [(r['train_loss'], r.get('valid_loss')) for r in hb], na
    assert ra['knn'] == {**rb['knn'], 'seconds': ra['knn']['seconds']}
    assert ra['probe'] == {**rb['probe'], 'seconds': ra['probe']['seconds']}
    for kind in ('baseline', 'finetune'): assert ra[kind]['test_accuracy'] == rb[kind]['test_accuracy']
    # the label subset and the folds are the same too
    assert [(r['n_train'], r['n_valid']) for r in ra['folds']['baseline']] == [(r['n_train'], r['n_valid']) for r in rb['folds']['baseline']]

def test_progress_line_says_throughput_and_time_left():
    "`ProgressLine` prints once per fit, after its timed batches, the throughput and the time the phase will take"
    from fastai.test_utils import synth_learner
    from fastai_simclr.reproduce import ProgressLine
    said = []
    learn = synth_learner(n_trn=8, cbs=ProgressLine('demo', 'images', n_batches=3, log=said.append))
    learn.fit(2)
    assert len(said) == 1 and re.fullmatch(r'\[demo\] [\d,]+ images/s over 3 timed batches: about \d+ s to go', said[0]), said

def test_results_and_report_after_every_phase(tmp_path, cifar):
    "A run cut short still returns what finished: results.json (status partial) and report.md are written after each phase"
    from fastai_simclr.reproduce import reproduce
    out, seen = tmp_path/'run', []
    def log(s):
        if ' done in ' in s:
            res = json.loads((out/'results.json').read_text())
            seen.append((s.split(']')[0][1:], res.get('status'), list(res.get('finished', [])), (out/'report.md').read_text()))
    final = reproduce('smoke', data=cifar, out=out, device='cpu', log=log, speed={'bf16': False, 'channels_last': False})
    labels = ['pretrain', 'knn', 'probe', 'baseline fold 0', 'baseline fold 1', 'finetune fold 0', 'finetune fold 1']
    assert [s[0] for s in seen] == labels
    for i, (label, status, finished, md) in enumerate(seen):
        assert status == 'partial' and finished == labels[:i+1], (label, finished)
        assert f'{i+1} of 7 phases done' in md and '(partial)' in md
    assert 'pre-trained' in seen[1][3] and 'baseline fold 1: validation accuracy' in seen[4][3]
    res = json.loads((out/'results.json').read_text())   # the complete run's files replace the partial ones
    assert 'status' not in res and res['baseline'] == json.loads(json.dumps(final['baseline']))
    md = (out/'report.md').read_text()
    assert '(partial)' not in md
    # the seed's own measure: validation images through the training augmentation, beside its 76% / 82%
    augs = [r['valid_accuracy_augmented'] for k in ('baseline', 'finetune') for r in res['folds'][k]]
    assert len(augs) == 4 and all(0 <= a <= 1 for a in augs)
    assert '| validation accuracy on augmented images, as the seed measured it |' in md and md.count('76% / 82%') == 1
