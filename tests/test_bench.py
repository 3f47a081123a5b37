"The bench command on a tiny size: it runs and prints the expected fields (speed itself is measured by the benchmark, never here)"
import json, os, subprocess, sys
from pathlib import Path
import pytest
from fastai_simclr.speed import bf16_native
NATIVE = bf16_native('cpu')   # the device default of this CPU
from conftest import run_cli, run_main

ROOT = Path(__file__).resolve().parent.parent
FIELDS = ('views/s', 'ms/step', 'data', 'augment', 'forward', 'loss', 'backward_step', 'other')
TINY = ('--bs', '8', '--steps', '2', '--warmup', '1', '--device', 'cpu', '--threads', '1')

def test_bench_prints_figures_ratios_and_split(tmp_path, cifar_path):
    r = run_cli('bench', '--data', str(cifar_path), *TINY, '--only', 'ours,plain', '--rounds', '2', '--json', str(tmp_path/'b.json'))
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {}
    for l in r.stdout.splitlines():   # the rows of (1); (2) repeats ours after them
        if l.split()[:1] in (['ours'], ['plain']): rows.setdefault(l.split()[0], l)
    assert set(rows) == {'ours', 'plain'}
    for l in rows.values(): assert all(f in l for f in FIELDS), l
    assert 'ours/plain:' in r.stdout and 'ours/peer: n/a' in r.stdout and 'batch 8 images (16 views)' in r.stdout
    res = json.loads((tmp_path/'b.json').read_text())
    assert res['ours']['views_per_s'] > 0 and res['plain']['views_per_s'] > 0 and len(res['ours']['rounds']) == 2
    assert res['ours_over_plain'] == pytest.approx(res['ours']['views_per_s'] / res['plain']['views_per_s'])
    assert res['config']['speed'] == {'device_type': 'cpu', 'bf16': NATIVE, 'channels_last': NATIVE, 'compile': False}
    assert all(res[k]['warmup_s'] > 0 for k in ('ours', 'plain'))   # the warm-up step is timed apart (torch.compile compiles there)
    # (2) without --only peer: ours at its defaults is the measurement of (1), which ran at the device defaults
    assert res['defaults']['ours']['same_as'] == 'ours' and res['defaults']['ours_over_peer'] is None
    assert 'ours/peer at their defaults: n/a' in r.stdout

def test_bench_compares_each_at_its_defaults(tmp_path, cifar_path):
    "(1) in float32 for all; (2) measures ours again at the device defaults where they differ; --no-defaults skips (2)"
    r = run_cli('bench', '--data', str(cifar_path), *TINY, '--only', 'ours', '--no-bf16', '--no-channels-last', '--json', str(tmp_path/'b.json'))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/'b.json').read_text())
    assert res['ours']['speed'] == {'bf16': False, 'channels_last': False, 'compile': False}
    d = res['defaults']['ours']
    assert d['speed'] == {'bf16': NATIVE, 'channels_last': NATIVE, 'compile': False} and d['views_per_s'] > 0
    assert ('same_as' in d) == (not NATIVE)
    assert '(1) the same settings for all (float32)' in r.stdout and '(2) each at its defaults' in r.stdout
    r = run_cli('bench', '--data', str(cifar_path), *TINY, '--only', 'ours', '--no-defaults', '--json', str(tmp_path/'c.json'))
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'defaults' not in json.loads((tmp_path/'c.json').read_text()) and '(2)' not in r.stdout

def test_bench_speed_flags_are_recorded(tmp_path, cifar_path):
    "Asked-for options are recorded and named; bf16 only where it is native (emulated bf16 would make this a long bf16 measurement)"
    bf16 = ('--bf16',) if NATIVE else ('--no-bf16',)
    r = run_cli('bench', '--data', str(cifar_path), *TINY, '--only', 'ours', *bf16, '--channels-last', '--json', str(tmp_path/'b.json'))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((tmp_path/'b.json').read_text())['config']['speed'] == {'device_type': 'cpu', 'bf16': NATIVE, 'channels_last': True, 'compile': False}
    assert f"(1) the same settings for all ({'bf16, ' if NATIVE else ''}channels_last)" in r.stdout

@pytest.mark.parametrize('args,msg', [(('--bs', '1'), 'bs must be an integer >= 2'), (('--steps', '0'), 'steps must be a positive integer'),
                                      (('--only', 'mine'), 'unknown measurement'), (('--device', 'cuda'), 'CUDA is not available')])
def test_bench_bad_input(args, msg, cifar_path):
    if args[1] == 'cuda':
        import torch
        if torch.cuda.is_available(): pytest.skip('a GPU is present')
    r = run_main('bench', '--data', str(cifar_path), *args)
    assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]

def test_bench_missing_peer_python_is_reported(cifar_path):
    r = run_cli('bench', '--data', str(cifar_path), *TINY, '--only', 'peer', '--peer-python', '/no/such/python')
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'peer   not measured: peer python not found: /no/such/python' in r.stdout

@pytest.mark.skipif(not (ROOT/'.venv-peer/bin/python').is_file(), reason='no .venv-peer (bash bench/setup_peer.sh)')
def test_bench_peer_measured(cifar_path):
    r = run_cli('bench', '--data', str(cifar_path), *TINY, '--only', 'ours,peer', '--peer-python', str(ROOT/'.venv-peer/bin/python'))
    assert r.returncode == 0, r.stderr[-3000:]
    peer = [l for l in r.stdout.splitlines() if l.startswith('peer ')]
    assert peer and all(f in peer[0] for f in FIELDS), r.stdout
    assert 'ours/peer: n/a' not in r.stdout and 'ours/peer at their defaults: n/a' not in r.stdout
    assert 'float32' in [l for l in r.stdout.splitlines() if l.startswith('peer ')][-1]   # (2): the peer at its own default

def test_gpu_reproduce_script_cpu_path(tmp_path, cifar_path):
    "bench/gpu_reproduce.sh end to end on the CPU with the smoke preset: benchmark, reproduce, results folder"
    out = tmp_path/'run'
    env = dict(os.environ, DEVICE='cpu', PRESET='smoke', BENCH_BS='8', BENCH_STEPS='1', BENCH_WARMUP='1', OUT=str(out),
               FASTAI_SIMCLR_DATA=str(cifar_path), PYTHON=sys.executable, OMP_NUM_THREADS='1', SKIP_INSTALL='1', PREFLIGHT='0',
               RUN_ROOT=str(tmp_path/'runs'))
    r = subprocess.run(['bash', str(ROOT/'bench/gpu_reproduce.sh')], env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
    for f in ('results.json', 'report.md', 'bench.json', 'timing.txt', 'plan.txt', 'log.txt'): assert (out/f).is_file(), f
    assert len(list(out.iterdir())) <= 8   # what a device machine hands back
    assert 'time plan:' in (out/'plan.txt').read_text() and 'finished' in (out/'timing.txt').read_text()
    res = json.loads((out/'results.json').read_text())
    assert res['preset']['name'] == 'smoke' and res['speed'] == {'device_type': 'cpu', 'bf16': NATIVE, 'channels_last': NATIVE, 'compile': False}
    assert 'ours/plain:' in r.stdout and 'benchmark' in (out/'timing.txt').read_text()

def test_gpu_reproduce_script_refuses_missing_cuda(tmp_path, cifar_path):
    import torch
    if torch.cuda.is_available(): pytest.skip('a GPU is present')
    env = dict(os.environ, DEVICE='cuda', FASTAI_SIMCLR_DATA=str(cifar_path), PYTHON=sys.executable, OUT=str(tmp_path/'o'), SKIP_INSTALL='1',
               RUN_ROOT=str(tmp_path/'runs'))
    r = subprocess.run(['bash', str(ROOT/'bench/gpu_reproduce.sh')], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 3 and 'CUDA is not available' in r.stderr

@pytest.mark.skipif(os.environ.get('FASTAI_SIMCLR_DRYRUN') != '1', reason='about 6 minutes on 2 cores: FASTAI_SIMCLR_DRYRUN=1 runs it')
def test_gpu_dryrun_from_the_bundle_only():
    "bench/gpu_dryrun.sh: the device command from the bundle alone (no fastai, no registry, bare HOME), on the CPU"
    if not (ROOT/'bundle/fastai.txt').is_file(): pytest.skip('no bundle: PY_VERSIONS="3.12 3.11" bash bench/gpu_bundle.sh')
    r = subprocess.run(['bash', str(ROOT/'bench/gpu_dryrun.sh')], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert 'gpu_dryrun: ok: a complete smoke run' in r.stdout and 'site-packages/fastai' in r.stdout
