"""Saved notebook outputs are what a docs reader should see: no tracebacks, no warnings, no paths of the machine
that ran them. Every output of every notebook under `nbs/` is checked for the strings below."""
import json
from pathlib import Path
import pytest

NBS = Path(__file__).resolve().parent.parent/'nbs'
FORBIDDEN = ['Traceback', 'Warning:', '/root/', '/tmp/', '/home/', 'site-packages']
NOTEBOOKS = sorted(NBS.rglob('*.ipynb'))


def output_texts(nb):
    "(cell index, text) of every output of `nb`: streams, results, displays (text/plain, text/html, text/markdown) and errors"
    for i,c in enumerate(nb['cells']):
        for o in c.get('outputs', []):
            if 'text' in o: yield i, ''.join(o['text'])
            for k,v in o.get('data', {}).items():
                if k.startswith('text/'): yield i, ''.join(v) if isinstance(v, list) else str(v)
            if o.get('output_type') == 'error': yield i, 'Traceback ' + o.get('ename', '') + ': ' + o.get('evalue', '')


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 10


@pytest.mark.parametrize('nb_path', NOTEBOOKS, ids=lambda p: str(p.relative_to(NBS)))
def test_saved_outputs_are_clean(nb_path):
    nb = json.loads(nb_path.read_text())
    found = [(i, s, t[max(0, t.find(s)-60):t.find(s)+80].replace('\n', ' ')) for i,t in output_texts(nb) for s in FORBIDDEN if s in t]
    assert not found, f"{nb_path.name}: saved outputs show {len(found)} forbidden string(s); first ones:\n" + \
        '\n'.join(f"  cell {i}: {s!r} in ...{ctx}..." for i,s,ctx in found[:8])


def test_checker_catches_a_warning():
    "The check itself finds a string in a stream output, in a display, and an error output"
    nb = {'cells': [{'outputs': [{'output_type': 'stream', 'text': ['x.py:1: FutureWarning: old\n']}]},
                    {'outputs': [{'output_type': 'display_data', 'data': {'text/plain': "PosixPath('/tmp/a')"}}]},
                    {'outputs': [{'output_type': 'error', 'ename': 'ValueError', 'evalue': 'bad'}]}]}
    texts = [t for _,t in output_texts(nb)]
    assert any('Warning:' in t for t in texts) and any('/tmp/' in t for t in texts) and any('Traceback' in t for t in texts)
