"`--budget`: the planner with given speeds, a resumed budgeted run keeping its plan, and the command line end to end on the smoke preset"
import json, re
from pathlib import Path
import pytest

from conftest import run_cli as cli, run_main
import fastai_simclr.budget as budget
import fastai_simclr.reproduce as reproduce_mod
from fastai_simclr.budget import plan_budget, min_budget, parse_duration, plan_lines, MARGIN, PHASES
from fastai_simclr.recipes import get_preset, estimate_seconds

CPU = {'pretrain': 95., 'train': 230., 'eval': 300., 'checkpoint': 0.3, 'probe_fit': 0.005, 'phase': 3., 'report': 10.,
       'device': 'a 2-core CPU', 'speed': 'bf16, channels_last', 'seconds': 25.}
def faster(s, k): return {**s, 'pretrain': k * s['pretrain'], 'train': k * s['train'], 'eval': k * s['eval'], 'device': f'{k}x'}
def pre_views(p, n=50_000): return (p.pretrain_n or n) * p.pretrain_epochs

@pytest.mark.parametrize('base', ['seed', 'cpu1h', 'quick'])
@pytest.mark.parametrize('budget_s', [600, 1800, 3600])
def test_plan_fits_and_grows_with_speed(base, budget_s):
    b, last = get_preset(base), None
    for k in (1, 3, 10, 100):
        if min_budget(b, faster(CPU, k), spent_s=30) > budget_s: continue
        pl = plan_budget(b, budget_s, faster(CPU, k), spent_s=30)
        p = pl['preset']
        assert pl['total_s'] <= budget_s * (1 - MARGIN) + 1e-6   # the plan fits its budget
        assert list(pl['estimate']) == list(PHASES) and all(v > 0 for v in pl['estimate'].values())   # every phase runs
        assert len(p.fold_list) >= 2 and round(p.frac * 50_000) <= (p.pretrain_n or 50_000)
        assert (p.pretrain_bs, p.bs, p.lr, p.pretrain_lr, p.temperature) == (b.pretrain_bs, b.bs, b.lr, b.pretrain_lr, b.temperature)
        assert pre_views(p) <= pre_views(b) and p.epochs <= b.epochs and p.frac <= b.frac   # never beyond the base recipe
        # the estimate is estimate_seconds of the planned preset, split into phases
        e = estimate_seconds(p, faster(CPU, k))
        assert abs(pl['estimate']['baseline'] + pl['estimate']['finetune'] - e['folds']) < 0.2
        if last is not None:   # a faster machine: at least as large a run, and more pre-training unless both are the base's
            q = last['preset']
            assert pre_views(p) >= pre_views(q) and p.frac >= q.frac and len(p.fold_list) >= len(q.fold_list) and p.epochs >= q.epochs
            assert pre_views(p) > pre_views(q) or pre_views(p) == pre_views(b)
        last = pl

def test_faster_machine_gets_more_pretraining():
    slow, fast = (plan_budget(get_preset('seed'), 600, s, spent_s=30)['preset'] for s in (CPU, faster(CPU, 10)))
    assert pre_views(fast) > 2 * pre_views(slow)

def test_too_small_budget_is_refused_with_what_it_needs():
    need = min_budget(get_preset('seed'), CPU, spent_s=30)
    with pytest.raises(ValueError) as e: plan_budget(get_preset('seed'), need - 5, CPU, spent_s=30)
    msg = str(e.value)
    assert '\n' not in msg and 'below the smallest meaningful run of the seed recipe' in msg
    m = re.search(r'needs about (\S+) on this machine', msg)
    assert m and parse_duration(m.group(1)) >= need   # a budget of what it names is enough
    assert plan_budget(get_preset('seed'), parse_duration(m.group(1)), CPU, spent_s=30)['total_s'] <= parse_duration(m.group(1))

def test_budget_beyond_the_recipe_runs_the_recipe():
    b = get_preset('quick')
    pl = plan_budget(b, 10 * 3600, CPU)
    assert pl['preset'].replace(name=b.name, description=b.description) == b and pl['level'] == 1

def test_plan_lines_name_every_phase():
    pl = plan_budget(get_preset('seed'), 600, CPU, spent_s=30)
    text = '\n'.join(plan_lines(pl))
    for k in PHASES: assert re.search(rf'^{k}\s+\d+\.\d min', text, re.M), k
    assert re.search(r'^total\s+\d+\.\d min\s+of 10\.0', text, re.M)

@pytest.mark.parametrize('bad', ['ten', '10x', '-1m', '0', 'm10'])
def test_bad_budget_is_one_line(bad, tmp_path):
    r = run_main('reproduce', '--preset', 'smoke', '--budget', bad, '--out', tmp_path/'o', '--device', 'cpu')
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and '--budget' in r.stderr, r.stderr
    assert not (tmp_path/'o').exists()

def test_budget_below_the_measurement_is_refused_before_it(tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce_mod, 'measure_speeds', lambda *a, **k: pytest.fail('measured'))
    r = run_main('reproduce', '--preset', 'smoke', '--budget', '10s', '--out', tmp_path/'o', '--device', 'cpu')
    assert r.returncode == 2 and 'shorter than' in r.stderr and r.stderr.count('\n') == 1, r.stderr

def test_resumed_run_keeps_its_plan(tmp_path, cifar, monkeypatch):
    "A budgeted run's plan is in config.json; the same call again (resuming) takes it from there and measures nothing"
    calls = []
    def fake(p, data, *a, **k): calls.append(p.name); return dict(CPU, pretrain=2000., train=4000., eval=8000.)
    monkeypatch.setattr(reproduce_mod, 'measure_speeds', fake)
    out = tmp_path/'run'
    r1 = reproduce_mod.reproduce('smoke', data=cifar, out=out, device='cpu', log=lambda s: None, budget='3m', pretrain_only=True)
    cfg = json.loads((out/'config.json').read_text())
    assert calls == ['smoke'] and cfg['plan']['budget_s'] == 180 and cfg['plan']['speeds']['pretrain'] == 2000.
    assert cfg['preset']['name'] == 'smoke-3m' and r1['plan']['estimate']['pretrain'] > 0
    monkeypatch.setattr(reproduce_mod, 'measure_speeds', lambda *a, **k: pytest.fail('measured again'))
    lines = []
    r2 = reproduce_mod.reproduce('smoke', data=cifar, out=out, device='cpu', log=lines.append, budget='3m', pretrain_only=True)
    assert r2['plan'] == cfg['plan'] and r2['preset'] == cfg['preset']
    assert any('resuming the plan' in l for l in lines) and any(l.startswith('[plan] pretrain') for l in lines)
    # another budget for the same folder: refused, naming the budget
    with pytest.raises(ValueError, match='plan.budget_s: 180.0 there, 240.0 now'):
        reproduce_mod.reproduce('smoke', data=cifar, out=out, device='cpu', log=lambda s: None, budget='4m', pretrain_only=True)

def test_cli_budget_end_to_end(tmp_path):
    "The flag on the smoke preset: the plan printed before the first phase, recorded in config.json and results.json, in the report"
    out = tmp_path/'run'
    r = cli('reproduce', '--preset', 'smoke', '--budget', '8m', '--out', str(out), '--device', 'cpu')
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    idx = lambda pat: next(i for i, l in enumerate(lines) if re.search(pat, l))
    assert idx(r'^\[budget\] measuring') < idx(r'^\[plan\] budget 8m') < idx(r'^\[plan\] pretrain\s+\d') < idx(r'^\[plan\] total') < idx(r'^\[pretrain\] SimCLR')
    assert idx(r'^\[budget\] \d+s of the 8m budget') > idx(r'^\[report\]')
    cfg, res = (json.loads((out/f).read_text()) for f in ('config.json', 'results.json'))
    assert cfg['plan'] == res['plan'] and cfg['preset']['name'] == 'smoke-8m' and cfg['plan']['base']['name'] == 'smoke'
    for k in ('pretrain', 'train', 'eval', 'checkpoint'): assert cfg['plan']['speeds'][k] > 0
    md = (out/'report.md').read_text()
    assert '## Plan and actual time' in md
    for k in ('pretrain', 'knn', 'probe', 'baseline', 'finetune'): assert re.search(rf'^\| {k} \| \d+\.\d \| \d+\.\d \| [+-]\d+% \|$', md, re.M), k
