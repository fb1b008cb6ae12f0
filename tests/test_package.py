"""The package as PyPI will see it: the sdist and wheel build, pass `twine check --strict`, and carry the licence, the
command-line tools and the experiment notebooks; the wheel installed in a fresh virtual environment runs `difrob-report`
in an empty folder; the release workflow publishes a tagged version with trusted publishing."""
import json, os, subprocess, sys, sysconfig, zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def dists(tmp_path_factory):
    out = tmp_path_factory.mktemp('dist')
    r = subprocess.run([sys.executable, '-m', 'build', '--outdir', str(out), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sdist, wheel = list(out.glob('difrob-*.tar.gz')), list(out.glob('difrob-*.whl'))
    assert len(sdist) == len(wheel) == 1, list(out.iterdir())
    return [sdist[0], wheel[0]]


def test_build_and_twine_check(dists):
    r = subprocess.run([sys.executable, '-m', 'twine', 'check', '--strict', *map(str, dists)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.count('PASSED') == 2, r.stdout + r.stderr
    whl = zipfile.ZipFile(dists[1])
    names = whl.namelist()
    info = next(n.split('/')[0] for n in names if n.endswith('.dist-info/METADATA'))
    meta = whl.read(f'{info}/METADATA').decode()
    assert 'License-Expression: Apache-2.0' in meta and f'{info}/licenses/LICENSE' in names
    eps = whl.read(f'{info}/entry_points.txt').decode()
    for cmd in ('difrob-report = difrob.report:difrob_report', 'difrob-generate = difrob.generate:difrob_generate',
                'difrob-train = difrob.train:difrob_train', 'difrob-eval = difrob.train:difrob_eval', 'difrob-publish = difrob.report:difrob_publish'):
        assert cmd in eps, cmd
    assert 'difrob/rdc.py' in names and not any(n.startswith(('reports/', 'tests/')) for n in names)
    assert {f'difrob/nbs/{n}.ipynb' for n in ('data', 'train', 'rdc')} <= set(names) and 'difrob/nbs/profiles/small.yml' in names


def test_wheel_in_a_fresh_environment(dists, tmp_path):
    """The wheel alone, outside any clone: `difrob-report` finds its packaged notebooks and writes ./reports/.
    The new environment borrows this one's installed dependencies through a path file (so no torch download, and no
    access to this checkout: a path file does not run the editable install's hook), then installs the wheel itself."""
    env_dir, work = tmp_path/'venv', tmp_path/'work'
    work.mkdir()
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(env_dir)], check=True, timeout=120)
    py = env_dir/'bin'/'python'
    site = Path(subprocess.run([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True, check=True).stdout.strip())
    (site/'borrowed.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    r = subprocess.run([str(py), '-m', 'pip', 'install', '--no-deps', '--no-index', '--ignore-installed', '--quiet', str(dists[1])], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'PYTHONPATH')}
    env['PATH'] = f"{env_dir/'bin'}{os.pathsep}{env['PATH']}"
    r = subprocess.run([str(py), '-c', 'import difrob; print(difrob.__file__)'], capture_output=True, text=True, cwd=work, env=env)
    assert Path(r.stdout.strip()).is_relative_to(site), r.stdout + r.stderr  # the wheel, not this checkout
    r = subprocess.run([str(env_dir/'bin'/'difrob-generate'), '--help'], capture_output=True, text=True, cwd=work, env=env, timeout=120)
    assert r.returncode == 0 and '--n-per-class' in r.stdout and '(default: 18)' in r.stdout, r.stdout + r.stderr
    r = subprocess.run([str(env_dir/'bin'/'difrob-report'), '--only', 'data', '--no-progress'], capture_output=True, text=True, cwd=work, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rec = json.loads((work/'reports'/'index.json').read_text())[0]
    assert rec['status'] == 'ok' and Path(rec['notebook']).is_relative_to(site/'difrob'/'nbs'), rec
    prov = json.loads((work/'reports'/'data'/'provenance.json').read_text())
    assert prov['versions']['difrob'] and prov['git'] == {}, prov  # a wheel run: the package version, no commit


def test_a_clone_finds_its_own_notebooks(tmp_path):
    """Run from inside a clone, the clone's notebooks and reports folder are used, not those of the clone that holds
    the editable install (this checkout)."""
    clone = tmp_path/'other-clone'
    for d in ('nbs/profiles', 'difrob'): (clone/d).mkdir(parents=True)
    (clone/'pyproject.toml').write_text('')
    (clone/'nbs'/'data.ipynb').write_bytes((ROOT/'nbs'/'data.ipynb').read_bytes())
    code = 'from difrob.report import default_nbs, experiment_notebooks; from difrob.core import project_root; print(default_nbs(), project_root(), *experiment_notebooks())'
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=clone/'nbs', check=True)
    assert r.stdout.split() == [str((clone/'nbs').resolve()), str(clone.resolve()), 'data'], r.stdout


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
