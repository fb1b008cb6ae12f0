"""The package as PyPI will see it: the sdist and wheel build, pass `twine check --strict`, and carry the licence and the
command-line tools; the release workflow publishes a tagged version with trusted publishing."""
import subprocess, sys, zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_build_and_twine_check(tmp_path):
    r = subprocess.run([sys.executable, '-m', 'build', '--outdir', str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sdist, wheel = list(tmp_path.glob('difrob-*.tar.gz')), list(tmp_path.glob('difrob-*.whl'))
    assert len(sdist) == len(wheel) == 1, list(tmp_path.iterdir())
    dists = [sdist[0], wheel[0]]
    r = subprocess.run([sys.executable, '-m', 'twine', 'check', '--strict', *map(str, dists)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.count('PASSED') == 2, r.stdout + r.stderr
    whl = zipfile.ZipFile(dists[1])
    names = whl.namelist()
    info = next(n.split('/')[0] for n in names if n.endswith('.dist-info/METADATA'))
    meta = whl.read(f'{info}/METADATA').decode()
    assert 'License-Expression: Apache-2.0' in meta and f'{info}/licenses/LICENSE' in names
    eps = whl.read(f'{info}/entry_points.txt').decode()
    assert 'difrob-report = difrob.report:difrob_report' in eps and 'difrob-generate = difrob.generate:difrob_generate' in eps
    assert 'difrob/rdc.py' in names and not any(n.startswith(('reports/', 'tests/')) for n in names)


def test_release_workflow():
    wf = yaml.safe_load((ROOT/'.github'/'workflows'/'release.yaml').read_text())
    on = wf.get('on', wf.get(True))                                      # YAML 1.1 reads the key `on` as True
    assert on == {'push': {'tags': ['v*']}}                              # only a version tag publishes
    build, publish = wf['jobs']['build'], wf['jobs']['publish']
    runs = ' '.join(s.get('run', '') for s in build['steps'])
    assert 'python -m build' in runs and 'twine check --strict' in runs and 'GITHUB_REF_NAME' in runs
    assert publish['needs'] == 'build' and publish['permissions'] == {'id-token': 'write'}   # trusted publishing (OIDC)
    step = next(s for s in publish['steps'] if s.get('uses', '').startswith('pypa/gh-action-pypi-publish@'))
    assert not {'password', 'user'} & set(step.get('with', {}))          # no stored token
