"Bad input and failures through the CLI on real CIFAR-10 files: one clear line, exit status 2, nothing the user had is lost"
import json, os, shutil, subprocess, sys, hashlib
from pathlib import Path
import pytest
import torch

from conftest import run_cli, run_main as cli   # refusals in this process (seconds); runs that must be their own process use run_cli

def assert_error(r, *fragments):
    "Exit status 2, one line on stderr that starts with the program name and holds every fragment, no traceback"
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('fastai-simclr: error: '), r.stderr[-3000:]
    assert 'Traceback' not in r.stderr
    for f in fragments: assert f in lines[0], (f, lines[0])

def smoke(*args): return cli('reproduce', '--preset', 'smoke', '--device', 'cpu', *args)

def snapshot(d:Path): return {str(p.relative_to(d)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(d.rglob('*')) if p.is_file()}

def _can_unshare()->bool:
    "Whether this user may mount a tmpfs in a new user and mount namespace (`unshare -rm`): no root, no `mount` on the host"
    sh = 'd=$(mktemp -d) || exit 1; mount -t tmpfs -o size=1m tmpfs "$d"; rc=$?; umount "$d" 2>/dev/null; rmdir "$d"; exit $rc'
    try: r = subprocess.run(['unshare', '-rm', 'sh', '-c', sh], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError): return False
    return r.returncode == 0

UNSHARE = _can_unshare()

def cli_on_tmpfs(mnt:Path, opts:str, *args):
    """Run the CLI where `mnt` is a fresh tmpfs mounted with `opts` (e.g. `size=2m` or `ro`), in a private namespace
    (`unshare -rm`: works unprivileged where user namespaces are allowed, as on GitHub's runners once the workflow allows them).
    Returns the result and the files left on the tmpfs (relative paths), listed before the namespace goes."""
    if not UNSHARE: pytest.skip('unshare -rm cannot mount a tmpfs here (user namespaces disabled); see .github/workflows/test.yaml')
    mnt.mkdir(parents=True, exist_ok=True)
    script = ('mount -t tmpfs -o "$1" tmpfs "$2" || exit 99; m="$2"; shift 2; "$@" </dev/null; rc=$?; '
              'echo "==files=="; cd "$m" && find . -type f | sort; exit $rc')
    r = subprocess.run(['unshare', '-rm', 'sh', '-c', script, 'sh', opts, str(mnt), sys.executable, '-m', 'fastai_simclr.cli', *args],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode != 99, r.stderr
    out, _, files = r.stdout.partition('==files==\n')
    return subprocess.CompletedProcess(r.args, r.returncode, out, r.stderr), [f[2:] for f in files.split()]

def test_missing_data_folder(tmp_path):
    assert_error(smoke('--data', str(tmp_path/'nope'), '--out', str(tmp_path/'o')), 'CIFAR-10 folder not found', 'nope')

def test_malformed_data_folder(tmp_path):
    (tmp_path/'d'/'train'/'cat').mkdir(parents=True)
    assert_error(smoke('--data', str(tmp_path/'d'), '--out', str(tmp_path/'o')), 'no test/ subfolder')

def test_corrupt_image_named(small_cifar, tmp_path):
    f = sorted((small_cifar/'train'/'horse').iterdir())[1]
    f.write_bytes(f.read_bytes()[:64])   # truncated
    assert_error(smoke('--data', str(small_cifar), '--out', str(tmp_path/'o')), 'cannot read image', f'horse/{f.name}')

def test_unknown_preset(tmp_path):
    assert_error(cli('reproduce', '--preset', 'fastest', '--out', str(tmp_path/'o')), "unknown preset 'fastest'", 'seed, cpu1h, quick, smoke, gpu10min')

@pytest.mark.parametrize('args,msg', [
    (('--pretrain-bs', '100'), 'pretrain_bs (100) is larger than pretrain_n (64)'),
    (('--bs', '5000'), 'batch size 5000 is larger than the 20 labeled training images of a fold'),
    (('--pretrain-bs', '0'), 'pretrain_bs must be an integer >= 2'),
    (('--pretrain-bs', '1'), 'pretrain_bs must be an integer >= 2'),
    (('--temperature', '0'), 'temperature must be a number > 0'),
    (('--temperature', '-0.5'), 'temperature must be a number > 0'),
    (('--frac', '0'), '(0, 1]'),
    (('--frac', '1.2'), '(0, 1]'),
    (('--folds', '0,2'), 'fold 2 is out of range 0..1'),
    (('--set', 'warmup=3'), "unknown preset setting 'warmup'"),
    (('--set', 'lr=fast'), "cannot read 'fast' as a number"),
])
def test_bad_settings(tmp_path, args, msg):
    assert_error(smoke('--out', str(tmp_path/'o'), *args), msg)

def test_encoder_missing_truncated_or_foreign(tmp_path):
    assert_error(smoke('--out', str(tmp_path/'a'), '--encoder', str(tmp_path/'none.pth')), 'encoder file not found')
    good = tmp_path/'enc.pth'
    from fastai_simclr.model import cifar_resnet18
    torch.save(cifar_resnet18().state_dict(), good)
    trunc = tmp_path/'trunc.pth'; trunc.write_bytes(good.read_bytes()[:len(good.read_bytes())//3])
    assert_error(smoke('--out', str(tmp_path/'b'), '--encoder', str(trunc)), 'trunc.pth', 'not a readable torch checkpoint')
    import timm
    foreign = tmp_path/'resnet34.pth'; torch.save(timm.create_model('resnet34', num_classes=0).state_dict(), foreign)
    assert_error(smoke('--out', str(tmp_path/'c'), '--encoder', str(foreign)), 'another architecture')

def test_out_not_writable(tmp_path):
    f = tmp_path/'a_file'; f.write_text('mine')
    assert_error(smoke('--out', str(f)), 'a_file')
    assert f.read_text() == 'mine'

def test_out_on_read_only_file_system(tmp_path):
    r, files = cli_on_tmpfs(tmp_path/'ro', 'ro,size=1m', 'reproduce', '--preset', 'smoke', '--device', 'cpu', '--out', str(tmp_path/'ro'/'run'))
    assert_error(r, 'cannot write', 'ro/run')
    assert files == []

def test_disk_full_when_saving(tmp_path):
    "A real full disk (a 2 MB tmpfs): one line naming the file and what to do; no temporary file, no lock left"
    small = tmp_path/'small'
    r, files = cli_on_tmpfs(small, 'size=2m', 'reproduce', '--preset', 'smoke', '--device', 'cpu', '--out', str(small/'run'))
    assert_error(r, 'could not write', str(small/'run'/'pretrain'/'checkpoint.pth'), 'no space left on device', 'free some space')
    assert 'unexpected pos' not in r.stderr
    assert files == ['run/config.json'], files   # no half-written checkpoint, no temporary file, the lock released

def test_file_size_limit_when_saving(tmp_path):
    "Without any mount or namespace: a file size limit (RLIMIT_FSIZE) makes the first checkpoint write fail, as a full disk would"
    import resource
    out = tmp_path/'run'
    r = run_cli('pretrain', '--preset', 'smoke', '--device', 'cpu', '--out', str(out),
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, 2**20)))
    assert_error(r, 'could not write', str(out/'pretrain'/'checkpoint.pth'), 'File too large')
    assert sorted(str(p.relative_to(out)) for p in out.rglob('*') if p.is_file()) == ['config.json']

def test_other_configuration_refused_and_kept(smoke_run, tmp_path):
    out = tmp_path/'run'
    shutil.copytree(smoke_run[0], out)
    before = snapshot(out)
    assert_error(smoke('--out', str(out), '--seed', '7'), 'other settings', 'seed: 42 there, 7 now')
    assert_error(smoke('--out', str(out), '--epochs', '5'), 'other settings', 'preset')
    assert_error(cli('reproduce', '--preset', 'quick', '--device', 'cpu', '--out', str(out)), 'other settings', "'smoke' there")
    assert snapshot(out) == before
    other = tmp_path/'mine'; other.mkdir(); (other/'notes.txt').write_text('x')
    assert_error(smoke('--out', str(other)), 'not empty')
    assert (other/'notes.txt').read_text() == 'x'

def test_nonfinite_loss_stops_with_epoch_and_batch(tmp_path):
    out = tmp_path/'run'
    r = smoke('--out', str(out), '--set', 'pretrain_lr=1e12', '--pretrain-epochs', '3')
    assert_error(r, 'loss is', 'at epoch', 'batch')

def test_seed_preset_on_cpu_says_how_long(tmp_path):
    r = cli('reproduce', '--preset', 'seed', '--device', 'cpu', '--out', str(tmp_path/'o'))
    assert_error(r, 'the seed preset is 7.4 million image passes', 'hours', 'meant for a GPU', 'Add --yes')
    assert not (tmp_path/'o').exists()   # nothing started

# ---------------------------------------------------------------- one run per --out, folders, devices, corrupt files (the CLI's guards)

def test_second_run_on_same_out_refused(tmp_path):
    "A second run on the folder a running one holds: one line naming the holder, exit 2, nothing touched; a dead holder's folder is taken over"
    import signal, socket, time
    from fastai_simclr.checkpoint import RunLock, LOCK_NAME
    out = tmp_path/'run'
    first = subprocess.Popen([sys.executable, '-m', 'fastai_simclr.cli', 'pretrain', '--preset', 'smoke', '--device', 'cpu', '--out', str(out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def holder():
        try: return json.loads((out/LOCK_NAME).read_text())['pid']
        except (OSError, ValueError, KeyError): return None
    try:
        t0 = time.time()
        while holder() != first.pid:
            assert first.poll() is None and time.time() - t0 < 600, 'the first run ended before it held the folder'
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)   # frozen while it holds the folder: the check below cannot race its end
        before = snapshot(out)
        r = cli('pretrain', '--preset', 'smoke', '--device', 'cpu', '--out', str(out))
        assert_error(r, f'{out} is in use by another run', f'PID {first.pid} ', f'on host {socket.gethostname()}', 'started 20')
        assert snapshot(out) == before
    finally:
        first.send_signal(signal.SIGKILL); first.wait()
    with RunLock(out) as lock: assert lock.previous['pid'] == first.pid   # killed: its lock went with it

@pytest.mark.parametrize('where', ['inside', 'same', 'holds_the_data'])
def test_out_and_data_folder_nested_refused(small_cifar, tmp_path, where):
    out = {'inside': small_cifar/'train'/'run', 'same': small_cifar, 'holds_the_data': tmp_path}[where]
    before = snapshot(tmp_path)
    r = smoke('--data', str(small_cifar), '--out', str(out))
    assert_error(r, *(['is inside the data folder', str(small_cifar)] if where != 'holds_the_data' else
                      [f'the data folder {small_cifar} is inside --out']))
    assert snapshot(tmp_path) == before   # nothing written: no run folder, no lock, no data cache

@pytest.mark.parametrize('dev,msg', [('foo', "unknown device 'foo'"), ('cuda:x', "unknown device 'cuda:x'"), ('meta', "'meta' is not supported")])
def test_bad_device_refused(tmp_path, dev, msg):
    assert_error(smoke('--out', str(tmp_path/'o'), '--device', dev), msg, 'use cpu')
    assert not (tmp_path/'o').exists()

@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is present')
@pytest.mark.parametrize('dev', ['cuda', 'cuda:1'])
def test_cuda_without_gpu_refused(tmp_path, dev):
    assert_error(cli('pretrain', '--preset', 'smoke', '--out', str(tmp_path/'o'), '--device', dev), 'no CUDA GPU is available here', '--device cpu')
    assert not (tmp_path/'o').exists()

def test_gpu_index_that_does_not_exist(tmp_path, monkeypatch, capsys):
    "On a machine with one GPU (patched in, so that it runs anywhere), cuda:3 is refused before anything is written"
    from fastai_simclr.cli import main
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert main(['reproduce', '--preset', 'smoke', '--out', str(tmp_path/'o'), '--device', 'cuda:3']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device 'cuda:3' does not exist: this machine has 1 GPU" in err[0], err
    assert not (tmp_path/'o').exists()

@pytest.fixture(scope='module')
def started_run(tmp_path_factory):
    "A `pretrain --preset smoke` folder killed just after its first checkpoint: config.json and pretrain/checkpoint.pth"
    out = tmp_path_factory.mktemp('started')/'run'
    r = subprocess.run([sys.executable, '-m', 'fastai_simclr.cli', 'pretrain', '--preset', 'smoke', '--device', 'cpu', '--out', str(out)],
                       capture_output=True, text=True, timeout=900, env={**os.environ, 'FASTAI_SIMCLR_KILL_AT': 'checkpoint.saved:1'})
    assert r.returncode == -9 and (out/'config.json').exists() and (out/'pretrain'/'checkpoint.pth').exists(), r.stderr[-3000:]
    return out

def _resume(out): return cli('pretrain', '--preset', 'smoke', '--device', 'cpu', '--out', str(out))

@pytest.mark.parametrize('name,content', [('config.json', ''), ('config.json', '{"preset": {"na'), ('pretrain/result.json', '{"history": [')])
def test_corrupt_json_named(started_run, tmp_path, name, content):
    out = tmp_path/'run'; shutil.copytree(started_run, out)
    (out/name).write_text(content)
    kept = lambda: {k: v for k,v in snapshot(out).items() if k != '.fastai_simclr.lock'}   # the killed run's lock file may go
    before = kept()
    assert_error(_resume(out), str(out/name), 'is not readable JSON', 'delete it')
    assert kept() == before

def test_crafted_checkpoint_refused_through_the_cli(started_run, tmp_path):
    "A checkpoint crafted to run code when loaded: the resume refuses it with one line, and the code never runs"
    import io
    class Evil:
        def __init__(self, marker): self.marker = str(marker)
        def __reduce__(self): return (io.open, (self.marker, 'w'))
    out = tmp_path/'run'; shutil.copytree(started_run, out)
    marker = tmp_path/'created_by_the_checkpoint'
    torch.save({'model': {}, 'opt': {}, 'epoch': 1, 'history': [], 'extra': None, 'x': Evil(marker)}, out/'pretrain'/'checkpoint.pth')
    assert_error(_resume(out), str(out/'pretrain'/'checkpoint.pth'), 'names a Python object (io.open)', 'not loaded')
    assert not marker.exists()
    (out/'pretrain'/'checkpoint.pth').write_bytes(b'PK\x03\x04 cut short')
    assert_error(_resume(out), 'checkpoint.pth is unreadable', 'delete it to start that phase again')
