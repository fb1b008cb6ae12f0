"""The docs build and the repository's generated files, checked without Quarto.

`nbdev-docs` needs Quarto, which is not installable everywhere; its first stage, `nbdev.serve.proc_nbs`,
processes every notebook exactly as the docs build does (running the export and show_doc cells, and the example
cells marked `#| exec_doc`) and fails on the same errors. Each check runs in a copy of the project, so the working
tree is never touched.
"""
import filecmp, importlib, inspect, os, re, shutil, subprocess, sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def copy_project(dst, examples=True):
    """A copy of the project. Without `examples`, the API notebooks' `#| exec_doc` marks are dropped: the docs build
    then runs only the export, import and show_doc cells (nbdev-test runs the examples themselves)."""
    for name in ('pyproject.toml', 'nbs', 'difrob'):
        src = ROOT/name
        (shutil.copytree(src, dst/name, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
         if src.is_dir() else shutil.copy(src, dst/name))
    if not examples:
        for p in (dst/'nbs'/'api').glob('*.ipynb'):
            nb = nbformat.read(p, as_version=4)
            for c in nb.cells: c.source = c.source.replace('#| exec_doc\n', '')
            nbformat.write(nb, p)
    return dst


PROC = "from nbdev.serve import proc_nbs; proc_nbs(n_workers=2)"


def test_docs_process_cleanly(tmp_path):
    proj = copy_project(tmp_path, examples=False)
    r = subprocess.run([sys.executable, '-c', PROC], cwd=proj, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    # a cell mixing imports with other code renders wrongly in the docs: nbdev only warns, we fail
    assert 'Found cells containing imports and other code' not in r.stderr, r.stderr[-3000:]
    done = {p.relative_to(proj/'_proc').as_posix() for p in (proj/'_proc').rglob('*.ipynb')}
    expected = {p.relative_to(proj/'nbs').as_posix() for p in (proj/'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts}
    assert expected <= done, expected - done


def test_docs_check_catches_errors(tmp_path):
    """The check above can fail: a notebook whose exported cell breaks makes the docs build fail."""
    proj = copy_project(tmp_path, examples=False)
    nb = new_notebook(cells=[new_markdown_cell('# broken'), new_code_cell('#| export\nfrom difrob.core import no_such_name')])
    nb.metadata = {'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}}
    nbformat.write(nb, str(proj/'nbs'/'api'/'50_broken.ipynb'))
    r = subprocess.run([sys.executable, '-c', PROC], cwd=proj, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and 'no_such_name' in r.stderr


def test_clean_and_export_change_nothing(tmp_path):
    proj = copy_project(tmp_path)
    for cmd in ('nbdev-clean', 'nbdev-export'):
        subprocess.run([str(BIN/cmd)], cwd=proj, check=True, capture_output=True, timeout=300)
    for sub in ('nbs', 'difrob'):
        for p in (ROOT/sub).rglob('*'):
            if p.is_file() and '__pycache__' not in p.parts and '.ipynb_checkpoints' not in p.parts:
                assert filecmp.cmp(p, proj/sub/p.relative_to(ROOT/sub), shallow=False), \
                    f'{p.relative_to(ROOT)} changes under nbdev-clean/nbdev-export: run them and commit'


def test_readme_is_generated_from_index():
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_ci_runs_the_readme_test_command():
    ci = (ROOT/'.ci'/'run').read_text()
    cmd = next(l.split('=', 1)[1].strip().strip("'") for l in ci.splitlines() if l.startswith('TEST_CMD='))
    assert cmd in (ROOT/'README.md').read_text()


def test_front_page_findings_match_the_metrics():
    "The findings table in nbs/index.ipynb (and so the README) is what the committed reports/**/metrics.json say."
    r = subprocess.run([sys.executable, str(ROOT/'tools'/'findings.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert '<!-- findings:start -->\n| paper | claim |' in (ROOT/'README.md').read_text()


def test_license_and_citation():
    "LICENSE is the Apache 2.0 text the metadata names; CITATION.cff is valid CFF and cites every paper the findings table names."
    import tomllib, yaml
    from difrob.report import CLAIMS
    lic = (ROOT/'LICENSE').read_text()
    assert 'Apache License' in lic and 'Version 2.0, January 2004' in lic and 'END OF TERMS AND CONDITIONS' in lic
    meta = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']
    cff = yaml.safe_load((ROOT/'CITATION.cff').read_text())
    assert cff['cff-version'] == '1.2.0' and cff['message'] and cff['authors'] and cff['type'] == 'software'
    assert cff['license'] == meta['license'] == 'Apache-2.0' and cff['title'].startswith(meta['name'] + ':')
    for r in cff['references']:
        assert r['type'] in ('conference-paper', 'article') and r['title'] and isinstance(r['year'], int), r
        assert all(a['family-names'] and a['given-names'] for a in r['authors']), r['title']
        assert any(i['value'].startswith('arXiv:') for i in r['identifiers']), r['title']
    cited = {(r['authors'][0]['family-names'], r['year']) for r in cff['references']}
    named = {(c['paper'].split()[0], int(c['paper'].split()[-1])) for c in CLAIMS}   # 'Wang et al. 2023'
    assert named <= cited, f'papers in the findings table without a reference in CITATION.cff: {named - cited}'


def test_workflows_are_nbdev3s(tmp_path):
    "The GitHub workflows are nbdev 3's: nbdev's own migration (`nbdev-migrate-config`'s workflow step) has nothing left to change."
    from nbdev.migrate import _migrate_workflows
    shutil.copytree(ROOT/'.github', tmp_path/'.github')
    _migrate_workflows(tmp_path)
    for f in (ROOT/'.github'/'workflows').glob('*.y*ml'):
        assert f.read_text() == (tmp_path/'.github'/'workflows'/f.name).read_text(), f'{f.name} uses nbdev 2 workflows'
    assert 'AnswerDotAI/workflows/quarto-ghp3@' in (ROOT/'.github'/'workflows'/'deploy.yaml').read_text()


API = sorted((ROOT/'nbs'/'api').glob('*.ipynb'))


def directives(src):
    d = {}
    for line in src.splitlines():
        if m := re.match(r'#\|\s*([\w-]+)\s*(.*)', line): d[m[1]] = m[2]
        elif line.strip(): break
    return d


def module_of(nb):
    return next(directives(c.source)['default_exp'] for c in nb.cells if c.cell_type == 'code' and 'default_exp' in directives(c.source))


@pytest.mark.parametrize('path', API, ids=lambda p: p.stem)
def test_every_public_method_has_show_doc(path):
    nb = nbformat.read(path, as_version=4)
    mod, text = importlib.import_module(f'difrob.{module_of(nb)}'), '\n'.join(c.source for c in nb.cells)
    missing = [f'{n}.{m}' for n in mod.__all__ if inspect.isclass(cls := getattr(mod, n)) and cls.__module__ == mod.__name__
               for m, v in vars(cls).items() if not m.startswith('_') and (inspect.isfunction(v) or isinstance(v, (classmethod, staticmethod)))
               and f'show_doc({n}.{m})' not in text]
    assert not missing, missing


@pytest.mark.parametrize('path', API, ids=lambda p: p.stem)
def test_examples_run_in_the_docs_build(path):
    """Every code cell that nbdev-test runs is executed by the docs build too (exported cells and imports are anyway)."""
    nb = nbformat.read(path, as_version=4)
    skipped = []
    for c in nb.cells:
        d, body = directives(c.source), [l for l in c.source.splitlines() if not l.startswith('#|') and l.strip()]
        if c.cell_type != 'code' or not body or 'nbdev_export()' in c.source or d.keys() & {'export', 'exports', 'exporti', 'slow', 'gpu', 'default_exp'}: continue
        if all(re.match(r'(import|from)\s', l) for l in body) or re.fullmatch(r'show_doc\([\w.]+\)', '\n'.join(body)): continue
        if 'exec_doc' not in d: skipped.append(c.source[:80])
    assert not skipped, skipped


def test_docs_build_renders_outputs():
    """nbdev's docs processors on one API notebook: the examples carry their outputs, the helpers of the tests are not API."""
    code = ("from fastcore.nbio import read_nb; from nbdev.processors import FilterDefaults\n"
            "nb = read_nb('api/02_models.ipynb'); FilterDefaults()(nb)\n"
            "outs = [''.join(o.get('text', '')) for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'stream']\n"
            "docs = [c.source for c in nb.cells if 'show_doc(' in c.source]\n"
            "print(any('parameters' in o for o in outs), any('show_doc(_' in s for s in docs), any('show_doc(from_dm_state_dict)' in s for s in docs))")
    r = subprocess.run([sys.executable, '-c', code], cwd=ROOT/'nbs', capture_output=True, text=True, timeout=600, env={**os.environ, 'IN_TEST': '1'})
    assert r.stdout.split()[-3:] == ['True', 'False', 'True'], r.stdout[-2000:] + r.stderr[-2000:]
