"""Render the saved text outputs of notebooks as a terminal shows them.

`nbdev-test --save` runs notebooks without a Jupyter front end, so fastai's progress bars are saved as
console text: every redraw of the bar, separated by carriage returns. A terminal shows only what each
line ends up as; this keeps just that (the epoch table rows, the messages) and drops lines that end
blank. Run it after saving outputs: `python tools/tidy_outputs.py nbs/04_callback.ipynb ...` (default:
every notebook under nbs/)."""
import json, sys
from pathlib import Path

def terminal_text(text:str)->str:
    "What a terminal shows for `text`: each line's last carriage-return segment, progress-bar-only lines dropped"
    out = []
    for line in text.split('\n'):
        seg = [s for s in line.split('\r') if s.strip()]
        last = seg[-1].rstrip() if seg else ''
        last = last.replace('█', '').rstrip() if last.strip('█ ') else ''
        if last or (not line and out and out[-1]): out.append(last)
    return '\n'.join(out)

def tidy(path:Path)->bool:
    "Tidy the stream outputs of the notebook at `path`; True if it changed"
    nb = json.loads(path.read_text())
    changed = False
    for cell in nb['cells']:
        for o in cell.get('outputs', []):
            if o.get('output_type') != 'stream': continue
            text = ''.join(o['text'])
            if '\r' not in text and '█' not in text: continue
            new = terminal_text(text)
            if new != text: o['text'], changed = new.splitlines(True), True
    if changed: path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    return changed

if __name__ == '__main__':
    paths = [Path(p) for p in sys.argv[1:]] or sorted(Path('nbs').rglob('*.ipynb'))
    for p in paths:
        if tidy(p): print(f'tidied {p}')
