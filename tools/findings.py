"""Write the findings table into nbs/index.ipynb (the front page, and so README.md) from the committed metrics.

    python tools/findings.py          # regenerate the table in nbs/index.ipynb, then README.md
    python tools/findings.py --check  # exit 1 if the front page disagrees with reports/**/metrics.json
"""
import subprocess, sys
from pathlib import Path

import nbformat

from difrob.report import findings, findings_markdown

ROOT = Path(__file__).resolve().parents[1]
START, END = '<!-- findings:start -->', '<!-- findings:end -->'


def table() -> str:
    return findings_markdown(findings(ROOT/'reports'))


def cell(nb):
    hits = [c for c in nb.cells if c.cell_type == 'markdown' and START in c.source and END in c.source]
    if len(hits) != 1: raise SystemExit(f"nbs/index.ipynb: expected one markdown cell with {START} … {END}, found {len(hits)}")
    return hits[0]


def current(nb) -> str:
    return cell(nb).source.split(START, 1)[1].split(END, 1)[0].strip()


if __name__ == '__main__':
    path = ROOT/'nbs'/'index.ipynb'
    nb = nbformat.read(str(path), as_version=4)
    want = table()
    if '--check' in sys.argv:
        ok = current(nb) == want
        print('the front page matches the metrics' if ok else 'the front page disagrees with reports/**/metrics.json: run python tools/findings.py')
        sys.exit(0 if ok else 1)
    c = cell(nb)
    head, rest = c.source.split(START, 1)
    c.source = f"{head}{START}\n{want}\n{END}{rest.split(END, 1)[1]}"
    nbformat.write(nb, str(path))
    subprocess.run([sys.executable, str(ROOT/'tools'/'readme.py')], check=True)
    print(f'wrote the findings table into {path}')
