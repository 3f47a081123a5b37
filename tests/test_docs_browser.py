"""The docs in a real browser: `tools/preview.py` builds the pages, headless Chromium renders them.

Needs Chromium (`bash tools/install_chromium.sh`, which `tools/test.sh` runs; or `$CHROMIUM`).
Screenshots and the preview log go to `test-output/docs_browser/`."""
import base64, io, json, os, posixpath, re, shutil, subprocess, sys
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote
import pytest

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/'nbs'
CALLBACK_NB = NBS/'04_callback.ipynb'
OUT = ROOT/'test-output'/'docs_browser'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync']
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def chromium_exe():
    exe = os.environ.get('CHROMIUM') or shutil.which('chromium')
    if not exe:
        pytest.fail('Chromium not found: run `bash tools/install_chromium.sh` (tools/test.sh does) or set $CHROMIUM')
    return exe


def chromium(args, page, tmp_path_factory, timeout=180):
    "Run headless Chromium with a fresh profile on the file `page`"
    profile = tmp_path_factory.mktemp('chromium-profile')
    r = subprocess.run([chromium_exe(), *FLAGS, f'--user-data-dir={profile}', *args, Path(page).as_uri()],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f'chromium failed on {page} ({r.returncode}):\n{r.stderr[-3000:]}'
    return r


class Dom(HTMLParser):
    "What the tests look at in a dumped DOM"
    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.ids, self.links, self.imgs, self.headings, self.pres, self.classes = set(), [], [], [], [], []
        self._cur = []  # open elements whose text we collect: [tag, attrs, [text]]
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get('id'): self.ids.add(a['id'])
        if a.get('class'): self.classes.append(a['class'])
        if tag == 'a' and a.get('href') is not None: self.links.append(a['href'])
        if tag == 'img': self.imgs.append(a.get('src') or '')
        if tag in ('h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'pre'): self._cur.append([tag, a, []])

    def handle_endtag(self, tag):
        for i in range(len(self._cur) - 1, -1, -1):
            if self._cur[i][0] == tag:
                t, a, txt = self._cur.pop(i)
                text = re.sub(r'\s+', ' ', ''.join(txt)).replace('¶', '').strip()
                (self.pres if t == 'pre' else self.headings).append((t, a.get('id'), a.get('class', ''), text))
                break

    def handle_data(self, data):
        for c in self._cur: c[2].append(data)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The preview, built into a temporary folder"
    out = tmp_path_factory.mktemp('preview')/'site'
    # --force: reprocess every notebook, so show_doc output comes from the current library, not a stale _proc/
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'preview.py'), '--force', '--out', str(out)], cwd=ROOT,
                       capture_output=True, text=True, timeout=3600)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT/'preview.log').write_text(f'exit status {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}')
    assert r.returncode == 0, f'tools/preview.py failed ({r.returncode}); log in {OUT/"preview.log"}:\n{r.stderr[-6000:]}'
    assert (out/'index.html').exists(), r.stdout
    return out


@pytest.fixture(scope='module')
def doms(site, tmp_path_factory):
    "Every page's DOM after Chromium loaded it: {page path relative to the site: (dom text, Dom)}"
    res = {}
    for p in sorted(site.rglob('*.html')):
        text = chromium(['--dump-dom'], p, tmp_path_factory).stdout
        assert '<body' in text, f'no DOM dumped for {p}'
        res[p.relative_to(site).as_posix()] = (text, Dom(text))
    return res


def nb_title(nb_path):
    "The notebook's title: its first markdown H1 (nbdev turns it into the page title)"
    nb = json.loads(Path(nb_path).read_text(encoding='utf-8'))
    for c in nb['cells']:
        m = re.search(r'^#\s+(.+?)\s*$', ''.join(c['source']), re.M) if c['cell_type'] == 'markdown' else None
        if m: return m.group(1)


def page_notebooks():
    "The notebooks that become pages, as page paths (`tutorials/x.html`)"
    return sorted(p.relative_to(NBS).with_suffix('.html').as_posix() for p in NBS.rglob('*.ipynb')
                  if not any(o.startswith(('.', '_')) for o in p.relative_to(NBS).parts))


def h1_title(dom):
    titles = [t for tag, _, cls, t in dom.headings if tag == 'h1' and 'title' in cls]
    assert len(titles) == 1, f'expected one page title, got {titles}'
    return titles[0]


def test_a_page_per_notebook(site, doms):
    "Each notebook (tutorials too) has its page, listed in every page's sidebar"
    pages = page_notebooks()
    assert pages, 'no notebooks in nbs/'
    missing = [p for p in pages if p not in doms]
    assert not missing, f'notebooks without a page: {missing}'
    for page, (_, dom) in doms.items():
        linked = {posixpath.normpath(posixpath.join(posixpath.dirname(page), unquote(h.split('#')[0])))
                  for h in dom.links if h and not h.startswith('#') and '://' not in h}
        assert set(pages) <= linked | {page}, f'{page}: sidebar misses {sorted(set(pages) - linked - {page})}'


def test_index_page(doms):
    text, dom = doms['index.html']
    title = h1_title(dom)
    assert title
    if (NBS/'index.ipynb').exists(): assert title == nb_title(NBS/'index.ipynb')


def test_callback_page(doms):
    if not CALLBACK_NB.exists(): pytest.skip(f'{CALLBACK_NB.relative_to(ROOT)} does not exist yet')
    text, dom = doms['04_callback.html']
    assert h1_title(dom) == nb_title(CALLBACK_NB)
    heads = [h for h in dom.headings if h[0] in ('h2', 'h3', 'h4') and h[3] == 'SimCLRCallback']
    assert heads, f'no SimCLRCallback heading; headings: {[h[3] for h in dom.headings]}'
    assert 'simclrcallback' in dom.ids, 'the heading lacks the id nbdev links to (#simclrcallback)'
    sigs = [p for p in dom.pres if re.search(r'\bSimCLRCallback\s*\(', p[3])]
    assert sigs, 'no show_doc signature `SimCLRCallback(...)` on the page'


def test_plots_are_embedded(doms):
    "Images are data URIs (self-contained pages); at least one is a real PNG plot"
    pngs = []
    for page, (_, dom) in doms.items():
        for src in dom.imgs:
            assert src.startswith(('data:', 'http://', 'https://')), f'{page}: image not embedded: {src[:100]}'
            if src.startswith('data:image/png;base64,'): pngs.append((page, base64.b64decode(src.split(',', 1)[1])))
    assert pngs, 'no <img> with a PNG data URI on any page'
    from PIL import Image
    for page, data in pngs:
        assert data.startswith(PNG_MAGIC), f'{page}: PNG data URI is not a PNG'
        im = Image.open(io.BytesIO(data))
        assert im.width > 10 and im.height > 10, f'{page}: {im.size} image'
    assert any(len(Image.open(io.BytesIO(d)).convert('L').getcolors(256)) > 1 for _, d in pngs), \
        'every embedded PNG is one flat colour'


def test_no_errors_in_pages(doms):
    "No Python tracebacks or error outputs (cells that raised) on any page"
    for page, (text, dom) in doms.items():
        assert 'Traceback (most recent call last)' not in text, f'{page} shows a Python traceback'
        assert not [c for c in dom.classes if 'output_error' in c.split()], f'{page} has an error output (ename/evalue)'
        for block in re.findall(r'output_stderr[^>]*>\s*<pre>(.*?)</pre>', text, flags=re.S):
            bad = re.findall(r'^\s*\w*(?:Error|Exception)\b.*$', unescape(re.sub(r'<[^>]+>', '', block)), re.M)
            assert not bad, f'{page}: stderr output shows an exception: {bad[:3]}'


def test_links_between_pages(site, doms):
    "Links to other pages (and their anchors) resolve inside the preview; none point at notebooks"
    for page, (_, dom) in doms.items():
        for href in dom.links:
            if not href or re.match(r'^[a-z][a-z0-9+.-]*:', href, re.I): continue
            path, _, frag = href.partition('#')
            assert not re.search(r'\.(ipynb|qmd)$', path), f'{page}: link to a notebook: {href}'
            target = posixpath.normpath(posixpath.join(posixpath.dirname(page), unquote(path))) if path else page
            if target not in doms: pytest.fail(f'{page}: broken link {href}')
            if frag and unquote(frag) not in doms[target][1].ids: pytest.fail(f'{page}: link {href}: no #{frag} in {target}')


def test_screenshots(site, tmp_path_factory):
    "Chromium renders the pages to non-blank 1280x2000 screenshots"
    from PIL import Image
    OUT.mkdir(parents=True, exist_ok=True)
    pages = ['index.html'] + ['04_callback.html'] * CALLBACK_NB.exists()
    for page in pages:
        shot = OUT/(Path(page).stem + '.png')
        shot.unlink(missing_ok=True)
        chromium([f'--screenshot={shot}', '--window-size=1280,2000', '--hide-scrollbars'], site/page, tmp_path_factory)
        assert shot.exists() and shot.stat().st_size > 0, f'no screenshot of {page}'
        data = shot.read_bytes()
        assert data.startswith(PNG_MAGIC), f'{shot} is not a PNG'
        im = Image.open(shot).convert('L')
        assert im.size == (1280, 2000), im.size
        lo, hi = im.getextrema()
        assert hi - lo > 50, f'{shot} is blank'
    if not CALLBACK_NB.exists(): pytest.skip(f'{CALLBACK_NB.relative_to(ROOT)} does not exist yet (index.png checked)')
