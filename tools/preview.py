#!/usr/bin/env python
"""Offline preview of the docs site, without Quarto.

`nbdev-docs` renders the site with Quarto, which needs a binary download. This script instead:
1. runs `nbdev-proc-nbs` (nbdev's processed notebooks in `_proc/`: frontmatter, `show_doc` output, links to
   the API docs, hidden/exported cells removed; the same input Quarto gets),
2. renders each processed notebook to one self-contained HTML page with nbconvert (plots as data URIs),
   `nbs/index.ipynb` -> `index.html`, `nbs/tutorials/x.ipynb` -> `tutorials/x.html`,
3. adds a navigation sidebar in the order of nbdev's `nbs/sidebar.yml` and rewrites links between pages
   (`02_loss.ipynb`, `loss.html`, `02_loss.qmd`, absolute links to the hosted docs) to the generated pages.

Usage: python tools/preview.py [--out _preview] [--n-workers 0] [--force] [--no-proc]
It prints where the pages are; open `<out>/index.html` in a browser.
"""
import argparse, base64, html, json, mimetypes, os, posixpath, re, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = '.fastai_simclr_preview'
_keep_cell = ('cell_type', 'id', 'metadata', 'source', 'outputs', 'execution_count', 'attachments')
_keep_out = dict(stream=('output_type', 'name', 'text'),
                 display_data=('output_type', 'data', 'metadata'),
                 execute_result=('output_type', 'data', 'metadata', 'execution_count'),
                 error=('output_type', 'ename', 'evalue', 'traceback'))
_re_directive = re.compile(r'^\s*#\|\s*([\w-]+)\s*(?::\s*(.*?))?\s*$')
_hide_input, _hide_output, _remove = 'preview-hide-input', 'preview-hide-output', 'preview-remove'


_proc_code = """
import json, sys, traceback
from pathlib import Path
import nbdev.quarto as q, nbdev.doclinks, nbdev.serve_drv as drv
q._ensure_quarto = lambda: None  # the preview does not need Quarto: don't try to install it
nbdev.doclinks._build_modidx = lambda *a, **k: None  # leave the package alone (that is nbdev-export's job)
n_workers, force, report = int(sys.argv[1]), sys.argv[2] == 'True', sys.argv[3]
failed, _main = {}, drv.main
def _safe_main(o):
    "Process one notebook; on failure, note it, drop any stale copy, and go on with the others"
    try: _main(o)
    except Exception as e:
        failed[str(o[0])] = ''.join(traceback.format_exception_only(type(e), e)).strip()
        print(f'nbdev-proc-nbs failed on {o[0]}:', failed[str(o[0])], sep='\\n', file=sys.stderr)
        Path(o[1]).unlink(missing_ok=True)
if n_workers == 0: drv.main = _safe_main  # (worker processes run nbdev's own, which stops at the first failure)
q.nbdev_proc_nbs.__wrapped__(n_workers=n_workers, force=force)
Path(report).write_text(json.dumps(failed))
"""


def run_proc_nbs(root, n_workers=0, force=False):
    "Run `nbdev-proc-nbs` in `root` (in a subprocess) without its Quarto install and `_modidx.py` rebuild; {nb: error}"
    import tempfile
    env = dict(os.environ)
    # a fresh clone works without installing the package first
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(root), env.get('PYTHONPATH', '')]))
    with tempfile.TemporaryDirectory() as d:
        report = Path(d)/'failed.json'
        r = subprocess.run([sys.executable, '-c', _proc_code, str(int(n_workers)), str(bool(force)), str(report)],
                           cwd=root, env=env)
        if not report.exists(): sys.exit(f'nbdev-proc-nbs failed (exit status {r.returncode})')
        return json.loads(report.read_text())


def pandoc_id(text):
    "Heading id the way Pandoc/Quarto (and so nbdev's doc links) make it"
    s = re.sub(r'[^\w\s.-]', '', text.strip().lower())
    s = re.sub(r'\s+', '-', s)
    s = re.sub(r'^[^a-z]+', '', s)
    return s or 'section'


def frontmatter(nb):
    "Frontmatter dict from the raw cell nbdev puts first, and that cell's index"
    import yaml
    for i, c in enumerate(nb['cells']):
        src = ''.join(c.get('source', ''))
        if c['cell_type'] == 'raw' and src.strip().startswith('---'):
            body = src.strip()[3:]
            body = body[:body.rfind('---')] if body.rstrip().endswith('---') else body
            try: return (yaml.safe_load(body) or {}), i
            except yaml.YAMLError: return {}, i
    return {}, None


def _fenced_divs(md):
    "Quarto fenced divs (`::: {.callout-note}` ... `:::`) as placeholder paragraphs, made into divs after rendering"
    def _open(m):
        attrs = m.group(1) if m.group(1) is not None else '.' + m.group(2)
        cls = ''.join(re.findall(r'\.[\w-]+', attrs))
        return f'\n\nPREVIEWDIVOPEN{cls}\n\n'
    md = re.sub(r'^:::+[ \t]*(?:\{([^}\n]*)\}|([\w-]+))[ \t]*$', _open, md, flags=re.M)
    return re.sub(r'^:::+[ \t]*$', '\n\nPREVIEWDIVCLOSE\n\n', md, flags=re.M)


def _fenced_divs_html(body):
    body = re.sub(r'<p>PREVIEWDIVOPEN([\w.-]*)</p>', lambda m: f'<div class="{" ".join(m.group(1).split(".")).strip()}">', body)
    return body.replace('<p>PREVIEWDIVCLOSE</p>', '</div>')


def clean_nb(nb):
    "A valid nbformat 4 notebook from nbdev's processed one, with Quarto cell options turned into nbconvert tags"
    fm, fm_idx = frontmatter(nb)
    cells = []
    for i, c in enumerate(nb['cells']):
        if i == fm_idx: continue
        c = {k: v for k, v in c.items() if k in _keep_cell}
        src = ''.join(c.get('source', ''))
        tags = []
        if c['cell_type'] == 'code':
            lines, opts = src.splitlines(), {}
            while lines and _re_directive.match(lines[0]):
                k, v = _re_directive.match(lines.pop(0)).groups()
                opts[k.lower()] = (v or '').strip().strip('"\'').lower()
            src = '\n'.join(lines)
            if opts.get('include') == 'false': continue
            if opts.get('echo') == 'false' or not src.strip(): tags.append(_hide_input)
            if opts.get('output') == 'false': tags.append(_hide_output)
            outs = []
            for o in c.get('outputs', []):
                keys = _keep_out.get(o.get('output_type'))
                if keys: outs.append({k: o[k] for k in keys if k in o})
            c['outputs'] = outs
            c.setdefault('execution_count', None)
            if not src.strip() and not outs: continue
        elif c['cell_type'] == 'markdown':
            src = _fenced_divs(src)
            if not src.strip(): continue
        else: continue  # raw cells are for Quarto only
        c['source'] = src
        c['metadata'] = {'tags': tags} if tags else {}
        cells.append(c)
    res = dict(nb, cells=cells, nbformat=4, nbformat_minor=max(nb.get('nbformat_minor', 5), 5))
    for i, c in enumerate(res['cells']): c.setdefault('id', f'cell-{i}')
    res['metadata'] = {k: v for k, v in nb.get('metadata', {}).items() if k in ('kernelspec', 'language_info')}
    return res, fm


def markdown_html(md):
    "Markdown (a page description) as HTML, the way nbconvert renders markdown cells"
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    return markdown2html_mistune(str(md)).strip()


def first_h1(nb):
    for c in nb['cells']:
        m = re.search(r'^#\s+(.+)$', ''.join(c.get('source', '')), re.M) if c['cell_type'] == 'markdown' else None
        if m: return m.group(1).strip()


class Site:
    def __init__(self, root, out):
        from nbdev.config import get_config
        self.root, self.out = Path(root).resolve(), Path(out).resolve()
        self.cfg = cfg = get_config(self.root)
        self.proc = cfg.config_path/'_proc'
        self.nbs = Path(cfg.nbs_path)
        self.title = cfg.get('title') or cfg.lib_name
        self.description = cfg.get('description', '')
        doc = (cfg.doc_host or '') + (cfg.doc_baseurl if cfg.doc_baseurl != '/' else '')
        self.doc_prefixes = [doc.rstrip('/') + '/'] if cfg.doc_host else []
        self.doc_prefixes += [p.replace('https://', 'http://', 1) for p in self.doc_prefixes]
        self.pages, self.link_map, self.warnings = {}, {}, []

    def collect(self):
        "The processed notebooks: {src rel path: page info}, and the map of every way to link to a page"
        for p in sorted(self.proc.rglob('*.ipynb')):
            rel = p.relative_to(self.proc)
            if any(o.startswith(('.', '_')) for o in rel.parts): continue
            nb = json.loads(p.read_text(encoding='utf-8'))
            fm, _ = frontmatter(nb)
            rp = rel.as_posix()
            out = posixpath.splitext(rp)[0] + '.html'
            title = str(fm.get('title') or first_h1(nb) or rel.stem)
            self.pages[rp] = dict(path=p, rel=rp, out=out, nb=nb, fm=fm, title=title,
                                  description=str(fm.get('description') or ''))
            base, d = posixpath.splitext(rp)[0], posixpath.dirname(rp)
            keys = [rp, out, base, base + '.qmd', base + '.md', out + '.md']
            for name in (fm.get('output-file'), re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.name.lower())):
                if name:
                    q = posixpath.join(d, posixpath.splitext(str(name))[0])
                    keys += [q, q + '.html', q + '.html.md', q + '.md']
            for k in keys: self.link_map.setdefault(k, out)
        if 'index.html' in self.link_map.values():
            for k in ('', '.', 'index'): self.link_map.setdefault(k, 'index.html')

    def rel_href(self, target, page_out):
        return posixpath.relpath(target, posixpath.dirname(page_out) or '.')

    def fix_href(self, href, page):
        "Point links to notebooks/docs pages at the generated page"
        raw = html.unescape(href)
        if not raw or raw.startswith('#'): return href
        base, frag = (raw.split('#', 1) + [''])[:2]
        frag = '#' + frag if frag else ''
        base = base.split('?', 1)[0]
        key = None
        for pre in self.doc_prefixes:
            if base.startswith(pre) or base + '/' == pre: key = base[len(pre):]
        if key is None:
            if re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*:', base) or base.startswith('/'): return href
            key = posixpath.normpath(posixpath.join(posixpath.dirname(page['rel']), base))
        key = key.strip('/')
        target = self.link_map.get(key)
        if target is None:
            if re.search(r'\.(ipynb|qmd|md|html)$', key) or base != raw.split('#')[0]:
                self.warnings.append(f"{page['rel']}: link to {raw!r} matches no page")
            return href
        return html.escape(self.rel_href(target, page['out']) + frag, quote=True)

    def embed_src(self, src, page):
        "Local image files as data URIs, so that the pages are self-contained"
        raw = html.unescape(src)
        if re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*:', raw) or raw.startswith('//'): return src
        for d in (page['path'].parent, self.nbs/posixpath.dirname(page['rel'])):
            f = (d/raw.split('?')[0]).resolve()
            if f.is_file():
                mime = mimetypes.guess_type(f.name)[0] or 'application/octet-stream'
                return f'data:{mime};base64,' + base64.b64encode(f.read_bytes()).decode()
        self.warnings.append(f"{page['rel']}: image {raw!r} not found, left as a link")
        return src

    @staticmethod
    def pandoc_attrs(body):
        "Pandoc attributes after links and images (`[source](url){target=\"_blank\"}`) onto the tags"
        def _attrs(txt):
            res, cls = [], []
            for k, v, c, i in re.findall(r'([\w-]+)=("[^"]*"|\'[^\']*\'|[^\s"\']+)|\.([\w-]+)|#([\w-]+)', html.unescape(txt)):
                if k: res.append(f' {k}="{html.escape(v.strip(chr(34)+chr(39)), quote=True)}"')
                elif c: cls.append(c)
                elif i: res.append(f' id="{html.escape(i, quote=True)}"')
            if cls: res.append(f' class="{" ".join(cls)}"')
            return ''.join(res)
        body = re.sub(r'(<a\s[^>]*?)>((?:(?!</a>).)*?)</a>\{([^{}<>\n]*)\}',
                      lambda m: f'{m.group(1)}{_attrs(m.group(3))}>{m.group(2)}</a>', body, flags=re.S)
        return re.sub(r'(<img\s[^>]*?)\s*/?>\{([^{}<>\n]*)\}', lambda m: f'{m.group(1)}{_attrs(m.group(2))}>', body)

    def fix_links(self, body, page):
        return re.sub(r'(<a\s[^>]*?href=")([^"]*)(")', lambda m: m.group(1) + self.fix_href(m.group(2), page) + m.group(3), body)

    def postprocess(self, body, page):
        "Quarto-style heading ids, rewritten links, embedded images; returns (body, toc entries)"
        seen, toc = {}, []
        body = self.pandoc_attrs(_fenced_divs_html(body))
        def _heading(m):
            lvl, inner = m.group(1), m.group(3)
            inner = re.sub(r'<a class="anchor-link"[^>]*>.*?</a>', '', inner, flags=re.S)
            text = html.unescape(re.sub(r'<[^>]+>', '', inner)).strip()
            hid = pandoc_id(text)
            if hid in seen: seen[hid] += 1; hid = f'{hid}-{seen[hid]}'
            else: seen[hid] = 0
            if lvl in ('2', '3'): toc.append((int(lvl), hid, text))
            return f'<h{lvl} id="{hid}">{inner}<a class="anchor-link" href="#{hid}">¶</a></h{lvl}>'
        body = re.sub(r'<h([1-6])(\s[^>]*)?>(.*?)</h\1>', _heading, body, flags=re.S)
        body = self.fix_links(body, page)
        body = re.sub(r'(<img\s[^>]*?src=")([^"]*)(")', lambda m: m.group(1) + self.embed_src(m.group(2), page) + m.group(3), body)
        return body, toc

    def exporter(self):
        from traitlets.config import Config
        from nbconvert import HTMLExporter
        c = Config()
        c.TagRemovePreprocessor.enabled = True
        c.TagRemovePreprocessor.remove_cell_tags = {_remove}
        c.TagRemovePreprocessor.remove_input_tags = {_hide_input}
        c.TagRemovePreprocessor.remove_all_outputs_tags = {_hide_output}
        return HTMLExporter(config=c, template_name='basic', embed_images=True,
                            exclude_input_prompt=True, exclude_output_prompt=True)

    def sidebar_items(self):
        "(section or None, [page rel]) in the order of nbdev's sidebar.yml, then any page it leaves out"
        import yaml
        groups, listed = [], set()
        def _page(entry):
            if isinstance(entry, dict): entry = entry.get('href') or entry.get('file')
            if not entry: return None
            key = posixpath.normpath(str(entry)).strip('/')
            out = self.link_map.get(key)
            return next((r for r, p in self.pages.items() if p['out'] == out), None)
        def _walk(contents, section):
            items = []
            groups.append((section, items))
            for e in contents or []:
                if isinstance(e, dict) and 'contents' in e:
                    _walk(e['contents'], e.get('section') or e.get('text'))
                    continue
                r = _page(e)
                if r and r not in listed: items.append(r); listed.add(r)
        sb = self.nbs/'sidebar.yml'
        side = {}
        if sb.exists():
            data = yaml.safe_load(sb.read_text()) or {}
            side = (data.get('website') or {}).get('sidebar') or {}
            if isinstance(side, list): side = side[0] if side else {}
        _walk(side.get('contents'), None)
        rest = [r for r in self.pages if r not in listed]
        for d in sorted({posixpath.dirname(r) for r in rest}):
            items = [r for r in rest if posixpath.dirname(r) == d]
            if not d: groups[0][1].extend(items)
            else: groups.append((d, items))
        return [g for g in groups if g[1]]

    def nav_html(self, page_out):
        parts = []
        for section, rels in self.sidebar_items():
            lis = ''.join(
                f'<li><a href="{html.escape(self.rel_href(self.pages[r]["out"], page_out))}"'
                f'{" class=active" if self.pages[r]["out"] == page_out else ""}>{html.escape(self.pages[r]["title"])}</a></li>'
                for r in rels)
            head = f'<div class="section">{html.escape(str(section))}</div>' if section else ''
            parts.append(f'{head}<ul>{lis}</ul>')
        return ''.join(parts)

    def page_html(self, title, description, body, toc, page_out):
        from pygments.formatters import HtmlFormatter
        idx = self.rel_href('index.html', page_out)
        toc_html = ''.join(f'<li class="l{lvl}"><a href="#{hid}">{html.escape(t)}</a></li>' for lvl, hid, t in toc)
        toc_html = f'<nav class="toc"><div class="section">On this page</div><ul>{toc_html}</ul></nav>' if toc else ''
        desc = f'<div class="description">{description}</div>' if description else ''
        css = CSS + HtmlFormatter(style='default').get_style_defs('.highlight')
        return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                f'<title>{html.escape(title)} – {html.escape(self.title)}</title>\n<style>\n{css}\n</style>\n</head>\n<body>\n'
                f'<nav class="sidebar" id="sidebar"><a class="site-title" href="{html.escape(idx)}">{html.escape(self.title)}</a>'
                f'{self.nav_html(page_out)}</nav>\n'
                f'<main id="content"><header id="title-block-header"><h1 class="title">{html.escape(title)}</h1>{desc}</header>\n'
                f'{body}\n</main>\n{toc_html}\n</body>\n</html>\n')

    def build(self):
        if self.out.exists():
            if any(self.out.iterdir()) and not (self.out/MARKER).exists():
                sys.exit(f'{self.out} exists and was not made by this script; remove it or pick another --out')
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True)
        (self.out/MARKER).write_text('made by tools/preview.py; deleted and rebuilt on each run\n')
        self.collect()
        exp, errors = self.exporter(), []
        import nbformat
        for rel, page in self.pages.items():
            nb, fm = clean_nb(page['nb'])
            node = nbformat.reads(json.dumps(nb), as_version=4)  # joins multi-line strings
            for c in node.cells:
                for o in c.get('outputs', []):
                    if o.get('output_type') == 'error': errors.append(f"{rel}: {o.get('ename')}: {o.get('evalue')}")
            body, _ = exp.from_notebook_node(node, resources={'metadata': {'path': str(page['path'].parent), 'name': Path(rel).stem}})
            body, toc = self.postprocess(body, page)
            dest = self.out/page['out']
            dest.parent.mkdir(parents=True, exist_ok=True)
            desc = self.fix_links(markdown_html(page['description']), page) if page['description'] else ''
            dest.write_text(self.page_html(page['title'], desc, body, toc, page['out']), encoding='utf-8')
        if 'index.html' not in {p['out'] for p in self.pages.values()}:
            self.warnings.append(f'no {self.cfg.readme_nb} in {self.nbs}: index.html only lists the pages')
            body = '<p>No <code>index.ipynb</code> yet. Pages:</p>' + self.nav_html('index.html')
            (self.out/'index.html').write_text(self.page_html(self.title, html.escape(self.description), body, [], 'index.html'),
                                               encoding='utf-8')
        return errors


CSS = """
* { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  color: #212529; line-height: 1.5; display: flex; align-items: flex-start; }
a { color: #2780e3; text-decoration: none; } a:hover { text-decoration: underline; }
nav.sidebar { position: sticky; top: 0; height: 100vh; overflow-y: auto; width: 250px; flex: none;
  padding: 1rem; border-right: 1px solid #dee2e6; background: #f8f9fa; font-size: .95rem; }
nav.sidebar .site-title { display: block; font-weight: 600; font-size: 1.2rem; margin-bottom: .75rem; color: #212529; }
nav ul { list-style: none; padding-left: 0; margin: 0 0 .75rem 0; }
nav li a { display: block; padding: 2px 6px; border-radius: 6px; color: #343a40; }
nav li a.active { background: #e8e8fc; color: #000; font-weight: 600; }
nav .section { font-weight: 600; text-transform: capitalize; margin: .5rem 0 .25rem 0; color: #6c757d; }
nav.toc { position: sticky; top: 0; width: 220px; flex: none; padding: 1rem; font-size: .85rem; overflow-wrap: anywhere; }
@media (max-width: 1200px) { nav.toc { display: none; } }
nav.toc li.l3 { padding-left: .75rem; }
main { flex: 1; min-width: 0; max-width: 960px; padding: 1rem 2rem 4rem 2rem; }
h1.title { margin-bottom: .25rem; }
div.description { font-style: italic; font-size: 135%; opacity: 70%; margin-top: 0; }
div.description p { margin-top: 0; }
a.anchor-link { visibility: hidden; margin-left: .3rem; font-size: .8em; }
h1:hover a.anchor-link, h2:hover a.anchor-link, h3:hover a.anchor-link, h4:hover a.anchor-link { visibility: visible; }
.cell { margin-bottom: 1rem; }
.input_area .highlight, .rendered_html .highlight { background: #f7f7f7; border-radius: 4px; }
pre { padding: .5rem .75rem; margin: 0; overflow-x: auto; font-size: .875rem; }
code { font-size: .875em; color: #7d12ba; } pre code { color: inherit; }
.output_area pre, .output_text pre { margin-left: .8rem; border-left: 2px solid lightsalmon; background: none; }
.output_error pre, .output_stderr pre { background: #fdd; }
.output_png img, .output_jpeg img, .rendered_html img { max-width: 100%; height: auto; }
table { border-collapse: collapse; margin: .5rem 0; } th, td { border: 1px solid #dee2e6; padding: .25rem .5rem; }
.callout-note, .callout-tip, .callout-warning, .callout-important, .callout-caution { border-left: 4px solid #2780e3;
  background: #f3f8fd; padding: .25rem 1rem; margin: 1rem 0; }
.callout-warning, .callout-caution { border-left-color: #ff7518; background: #fff6ef; }
.ansi-red-fg { color: #e75c58; } .ansi-green-fg { color: #00a250; } .ansi-yellow-fg { color: #ddb62b; }
.ansi-blue-fg { color: #208ffb; } .ansi-cyan-fg { color: #60c6c8; } .ansi-bold { font-weight: bold; }
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--out', default=None, help='output folder (default: _preview/ in the repo)')
    ap.add_argument('--root', default=str(ROOT), help='project root (default: this repo)')
    ap.add_argument('--n-workers', type=int, default=0, help='nbdev-proc-nbs workers (0: serial, the default)')
    ap.add_argument('--force', action='store_true', help='reprocess all notebooks (nbdev-proc-nbs --force)')
    ap.add_argument('--no-proc', action='store_true', help='reuse _proc/ as it is, without running nbdev-proc-nbs')
    a = ap.parse_args(argv)
    root = Path(a.root).resolve()
    out = Path(a.out).resolve() if a.out else root/'_preview'
    failed = run_proc_nbs(root, a.n_workers, a.force) if not a.no_proc else {}
    site = Site(root, out)
    errors = site.build()
    for w in site.warnings: print(f'warning: {w}', file=sys.stderr)
    for e in errors: print(f'error output: {e}', file=sys.stderr)
    for nb, e in failed.items(): print(f'NOT RENDERED: nbdev-proc-nbs failed on {nb} (nbdev-docs would fail too): {e}', file=sys.stderr)
    print(f'Preview: {len(site.pages)} pages in {out}')
    print(f'Open {(out/"index.html").as_uri()}')
    return 1 if failed or not site.pages else 0


if __name__ == '__main__': sys.exit(main())
