"Settings on the command line: one option per preset field, --set with booleans and tuples, and every bad setting refused with one line, exit status 2 and nothing written"
import json
from pathlib import Path
import pytest
import torch

from fastai_simclr.cli import main, make_parser, _preset_from_args
from fastai_simclr.recipes import preset_fields, get_preset, PRESETS

def run(capsys, *args):
    "`fastai-simclr ARGS` in this process: (exit status, stdout, stderr)"
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err

def assert_refused(capsys, out:Path, *args, fragments=()):
    "Exit status 2, one line on stderr naming the problem, and the output folder never created"
    rc, so, se = run(capsys, 'reproduce', '--preset', 'smoke', '--device', 'cpu', '--out', str(out), *args)
    lines = se.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith('fastai-simclr: error: '), (rc, se[-2000:])
    for f in fragments: assert f in lines[0], (f, lines[0])
    assert not out.exists(), 'something was written'
    return lines[0]

@pytest.mark.parametrize('args,frag', [
    (('--test-n', '0'), 'test_n must be an integer >= 1'),
    (('--pretrain-valid-n', '0'), 'pretrain_valid_n must be an integer >= 2'),
    (('--pretrain-n', '-5'), 'pretrain_n must be an integer >= 1'),
    (('--knn-test-n', '0'), 'knn_test_n must be an integer >= 1'),
    (('--pretrain-wd=-1e-6',), 'pretrain_wd must be a number >= 0'),
    (('--pretrain-wd', '-1e-6'), 'argument --pretrain-wd: expected one argument'),   # argparse's own errors are one line too
    (('--wd', '-0.1'), 'wd must be a number >= 0'),
    (('--gamma', '0'), 'gamma must be a number in (0, 1]'),
    (('--switch-epoch', '-1'), 'switch_epoch must be an integer >= 0'),
    (('--pretrain-gamma', '-0.6'), 'pretrain_gamma must be a number in (0, 1]'),
    (('--lr', 'inf'), 'lr must be a number > 0, got inf'),
    (('--temperature', 'nan'), 'temperature must be a number > 0, got nan'),
    (('--folds', '0,0'), 'folds must be distinct'),
    (('--folds', 'a'), "--folds: cannot read 'a' as a comma-separated list of integers"),
    (('--seed', '-1'), '--seed must be an integer >= 0, got -1'),
    (('--seed', 'x'), "--seed: cannot read 'x' as an integer"),
    (('--epochs', '2.5'), "--epochs: cannot read '2.5' as an integer"),
    (('--set', 'blur=maybe'), "--set blur: cannot read 'maybe' as true or false"),
    (('--set', 'jitter=0.4,0.4'), 'jitter must have 4 values'),
    (('--set', 'stats=imagenet'), "stats must be one of 'seed', 'cifar'"),
    (('--set', 'name=x'), 'not a setting of a run'),
    (('--device', 'tpu'), "unknown device 'tpu'"),
    (('--device', 'cuda:7'), 'cuda:7'),
    (('--pretrain-n', '30'), 'smaller than the labeled subset'),           # checked against the data, still before anything is written
    (('--bs', '5000'), 'batch size 5000 is larger than the 20 labeled training images of a fold'),
])
def test_bad_setting_refused_before_anything_is_written(capsys, tmp_path, args, frag):
    assert_refused(capsys, tmp_path/'o', *args, fragments=[frag])

def test_every_field_is_an_option():
    sub = make_parser()._subparsers._group_actions[0].choices
    for cmd in ('reproduce', 'pretrain'):
        h = sub[cmd].format_help()
        for f in preset_fields():
            if f.name not in ('name', 'description'): assert '--' + f.name.replace('_', '-') in h, (cmd, f.name)
        for n, p in PRESETS.items(): assert n in h and p.description.split()[0] in h   # the presets and what they are, in --help

def test_options_and_set_read_like_the_field():
    args = make_parser().parse_args(['reproduce', '--preset', 'quick', '--no-zero-init-last', '--blur', '--folds', '1,3', '--min-scale', '0.2',
                                     '--set', 'jitter=(0.4, 0.4, 0.4, 0)', '--set', 'views=joint', '--set', 'test-n=none', '--set', 'blur=false'])
    p = _preset_from_args(args)
    assert (p.zero_init_last, p.folds, p.min_scale, p.jitter, p.views, p.test_n) == (False, (1, 3), 0.2, (0.4, 0.4, 0.4, 0.), 'joint', None)
    assert p.blur is True    # an option wins over --set (options are applied last)
    assert p.replace(blur=False, folds=(0, 1), min_scale=0.08, jitter=(0.4, 0.4, 0.4, 0.1), views='separate', test_n=1_000) == get_preset('quick')

def test_out_inside_the_data_folder_refused(capsys, small_cifar, tmp_path):
    before = sorted(str(p) for p in small_cifar.rglob('*'))
    assert_refused(capsys, small_cifar/'run', '--data', str(small_cifar), fragments=['inside the data folder'])
    assert_refused(capsys, small_cifar/'train'/'x', '--data', str(small_cifar), fragments=['inside the data folder'])
    rc, _, se = run(capsys, 'reproduce', '--preset', 'smoke', '--device', 'cpu', '--out', str(tmp_path), '--data', str(small_cifar))
    assert rc == 2 and 'is inside --out' in se
    assert sorted(str(p) for p in small_cifar.rglob('*')) == before

def test_resume_with_any_other_setting_refused(capsys, cifar_path, small_cifar, tmp_path):
    "A folder's run is resumed only with every setting the same: other data, speed option or preset field is refused, each named"
    from fastai_simclr.reproduce import run_config, data_fingerprint
    out = tmp_path/'run'; out.mkdir()
    cfg = run_config(get_preset('smoke'), 42, None, {'bf16': False, 'channels_last': False, 'compile': False}, data_fingerprint(cifar_path))
    (out/'config.json').write_text(json.dumps(cfg))
    before = (out/'config.json').read_text()
    rc, _, se = run(capsys, 'reproduce', '--preset', 'smoke', '--device', 'cpu', '--out', str(out), '--data', str(small_cifar),
                    '--bf16', '--epochs', '3')
    assert rc == 2 and len(se.strip().splitlines()) == 1
    for s in ('data.fingerprint', 'speed.bf16: False there, True now', 'preset.epochs: 2 there, 3 now'): assert s in se, s
    assert (out/'config.json').read_text() == before and sorted(p.name for p in out.iterdir()) == ['config.json']
    cfg['versions']['torch'] = '0.0'; (out/'config.json').write_text(json.dumps(cfg))
    rc, _, se = run(capsys, 'reproduce', '--preset', 'smoke', '--device', 'cpu', '--out', str(out))
    assert rc == 2 and f"versions.torch: '0.0' there, {torch.__version__!r} now" in se

def test_corrupt_config_named(capsys, tmp_path):
    out = tmp_path/'run'; out.mkdir(); (out/'config.json').write_text('{"pres')
    rc, _, se = run(capsys, 'reproduce', '--preset', 'smoke', '--device', 'cpu', '--out', str(out))
    assert rc == 2 and 'config.json' in se and 'not readable JSON' in se


@pytest.mark.parametrize('cmd', ['reproduce', 'pretrain'])
def test_sync_bn_flag_default_and_off(cmd):
    "`--sync-bn` / `--no-sync-bn`; without either the default (`default_sync_bn`: on for several GPUs) decides"
    p = make_parser()
    assert p.parse_args([cmd]).sync_bn is None
    assert p.parse_args([cmd, '--sync-bn']).sync_bn is True
    assert p.parse_args([cmd, '--no-sync-bn']).sync_bn is False

def test_reproduce_records_sync_bn_off_in_one_process(tmp_path, monkeypatch):
    "In one process the default records `sync_bn: false`, as runs made before the default existed did (so they resume)"
    import fastai_simclr.reproduce as R
    monkeypatch.setattr('torch.cuda.is_available', lambda: True)   # even where there are GPUs
    seen = {}
    def stop(p, seed, encoder, spd, fp, sync_bn, *rest): seen['sync_bn'] = sync_bn; raise SystemExit
    monkeypatch.setattr(R, 'run_config', stop)
    with pytest.raises(SystemExit): R.reproduce('smoke', out=tmp_path/'o', device='cpu')
    assert seen == {'sync_bn': False}
