"""Reruns that can be trusted, tried as an adversarial user would: two runs in one folder, concurrent merges, read-only
folders and media, bad papermill parameters, a notebook rerun with other parameters in the same folder, and a report
killed half way. Each test reproduces a failure that difrob once had."""
import json, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def python(code, **kw):
    return subprocess.Popen([sys.executable, '-c', textwrap.dedent(code)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def wait_for(cond, proc=None, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond(): return
        if proc is not None and proc.poll() is not None: pytest.fail(f'process ended early: {proc.stderr.read()[-3000:]}')
        time.sleep(0.05)
    pytest.fail('timed out')


TRAIN = """
from difrob.data import load_dataset
from difrob.models import create_model
from difrob.train import TrainConfig, train
real = load_dataset('digits')
cfg = TrainConfig(eps=0.1, epochs={epochs}, batch_size=128, lr=0.1, n_val=100, attack_steps=2, val_steps=2, padding=1,
                  flip=False, gen_fraction=0.0, device='cpu', checkpoint_every=1)
train(create_model('cnn', in_channels=1, dataset='digits'), real, cfg, out_dir=r'{out}', progress=False)
print('trained')
"""


def test_two_trainings_in_one_folder(tmp_path):
    """The second run stops at once, naming the folder and the process that holds it; the first is unharmed."""
    out = tmp_path/'run'
    a = python(TRAIN.format(epochs=200, out=out))
    wait_for(lambda: (out/'.difrob.lock').exists() and (out/'.difrob.lock').stat().st_size > 0, a)
    b = python(TRAIN.format(epochs=1, out=out))
    _, err = b.communicate(timeout=120)
    assert b.returncode != 0 and 'FolderInUse' in err and str(out) in err and f'pid {a.pid}' in err, err[-2000:]
    assert a.poll() is None  # still training
    a.kill(); a.wait()
    c = python(TRAIN.format(epochs=1, out=out))  # a kill -9 leaves no stale lock
    so, se = c.communicate(timeout=300)
    assert c.returncode == 0 and 'trained' in so, se[-2000:]


def test_concurrent_merges_into_one_file(tmp_path):
    from difrob.data import load_generated, save_generated
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (20_000, 16, 16, 3), dtype=np.uint8)
    save_generated(tmp_path/'src.npz', imgs, rng.integers(0, 10, len(imgs)))
    code = f"from difrob.data import merge_generated; merge_generated(r'{tmp_path/'src.npz'}', r'{tmp_path/'dst.npz'}', chunk=500)"
    procs = [python(code) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]  # once: FileNotFoundError, the three shared one temporary name
    np.testing.assert_array_equal(load_generated(tmp_path/'dst.npz').images[:], imgs)
    assert not list(tmp_path.glob('*.tmp-*'))


def read_only(folder, code):
    """Run `code` in a new Python process that sees `folder` as read-only media (a read-only bind mount in a mount
    namespace of its own: nothing outside that process is affected)."""
    sh = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    return subprocess.run(['unshare', '--mount', 'sh', '-c', sh, 'sh', str(folder), sys.executable, '-c', textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


def can_mount():
    try: return read_only(ROOT, "import os; open(os.devnull)").returncode == 0
    except OSError: return False


@pytest.mark.skipif(not can_mount(), reason='needs unshare and mount (a mount namespace) to make read-only media')
def test_read_only_folders(tmp_path):
    """Training into a folder on read-only media fails before the first epoch, naming it; a finished store on read-only
    media reopens, and a rerun of its generation has nothing to do (no lock is needed to read)."""
    import torch
    from difrob.diffusion import create_denoiser, save_denoiser
    from difrob.generate import generate
    ro = tmp_path/'ro'; ro.mkdir()
    t0 = time.time()
    p = read_only(ro, TRAIN.format(epochs=50, out=ro/'run'))
    assert p.returncode != 0 and f'{ro/"run"}: cannot write here (Read-only file system)' in p.stderr and 'epoch' not in p.stdout, p.stderr[-2000:]
    assert time.time() - t0 < 60
    torch.manual_seed(0)
    D = create_denoiser(8, 1, 10, 'tiny')
    save_denoiser(tmp_path/'edm', D)
    kw = dict(n_per_class=4, classes=[1], steps=2, shard_size=2, net_batch=4, device='cpu', progress=False)
    generate(D, tmp_path/'store', **kw)
    code = f"""
    from difrob.data import load_generated
    from difrob.diffusion import load_denoiser
    from difrob.generate import generate
    store = generate(load_denoiser(r'{tmp_path/'edm'}'), r'{tmp_path/'store'}', **{kw!r})
    print(len(load_generated(store.path)))"""
    p = read_only(tmp_path/'store', code)
    assert p.returncode == 0 and p.stdout.strip() == '4', p.stderr[-2000:]


def papermill(nb, out_nb, *args, env=None):
    return subprocess.run([str(BIN/'papermill'), str(ROOT/'nbs'/nb), str(out_nb), '--no-progress-bar', *args],
                          capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})})


@pytest.mark.parametrize('nb,args,msg', [
    ('train.ipynb', ['-p', 'epochs', 'abc'], "epochs = 'abc' (str), expected an integer"),
    ('train.ipynb', ['-p', 'epochs', '2.5'], 'epochs = 2.5 (float), expected an integer'),
    ('generate.ipynb', ['-p', 'n_per_class', 'abc'], "n_per_class = 'abc' (str), expected an integer"),
])
def test_bad_papermill_parameters(tmp_path, nb, args, msg):
    r = papermill(nb, tmp_path/'o.ipynb', *args, '-p', 'out_dir', str(tmp_path/'out'))
    assert r.returncode != 0 and msg in r.stderr, r.stderr[-3000:]
    assert not (tmp_path/'out'/'metrics.json').exists()


SMALL = ['-p', 'n_eval', '20', '-p', 'n_val', '50', '-p', 'attack_steps', '2', '-p', 'pgd_steps', '3', '-p', 'baseline', 'False',
         '-p', 'aa_version', 'custom', '-y', 'aa_attacks: [apgd-ce]']


def test_train_notebook_rerun_with_other_parameters(tmp_path):
    """Rerun in the same out_dir with other parameters: the report holds the new run's numbers, not the old ones."""
    out, fresh = tmp_path/'out', tmp_path/'fresh'
    r = papermill('train.ipynb', tmp_path/'a.ipynb', *SMALL, '-p', 'epochs', '3', '-p', 'out_dir', str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    old = json.loads((out/'metrics.json').read_text())
    for o, nb in ((out, 'b'), (fresh, 'c')):
        r = papermill('train.ipynb', tmp_path/f'{nb}.ipynb', *SMALL, '-p', 'epochs', '1', '-p', 'lr', '0.0001', '-p', 'out_dir', str(o))
        assert r.returncode == 0, r.stderr[-3000:]
    rerun, ref = (json.loads((o/'metrics.json').read_text()) for o in (out, fresh))
    assert rerun['epochs'] == 1 and len(rerun['history']['AT']) == 1
    for k in ('clean_acc', 'pgd_acc', 'autoattack_acc'): assert rerun[k] == ref[k], k   # the numbers of a fresh run
    assert old['history']['AT'][0]['lr'] != rerun['history']['AT'][0]['lr']


REPORT_NB = """
import json, pathlib, time
import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
p = pathlib.Path(out_dir); p.mkdir(parents=True, exist_ok=True)
fig, ax = plt.subplots(); ax.plot([0, value]); fig.savefig(p/'figure.png'); plt.close(fig)
time.sleep(pause)
(p/'metrics.json').write_text(json.dumps({'value': value}))
"""


def test_report_killed_mid_rerun_and_only(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_report import cli, make_nb
    nbs, out = tmp_path/'nbs', tmp_path/'reports'
    nbs.mkdir(); (nbs/'profiles').mkdir()
    make_nb(nbs/'a.ipynb', REPORT_NB, params="value = 1\npause = 0\nout_dir = None")
    make_nb(nbs/'b.ipynb', REPORT_NB, params="value = 2\npause = 0\nout_dir = None")
    (nbs/'profiles'/'slow.yml').write_text('a: {value: 5, pause: 60}\n')
    r = subprocess.run(cli() + ['--nbs', str(nbs), '--out', str(out), '--no-progress'], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    fig = out/'a'/'figure.png'; before = fig.stat().st_mtime_ns
    p = subprocess.Popen(cli() + ['--nbs', str(nbs), '--out', str(out), '--profile', 'slow', '--no-progress'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    wait_for(lambda: fig.stat().st_mtime_ns != before, p, timeout=300)  # the rerun has rewritten the figure
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    recs = {x['name']: x for x in json.loads((out/'index.json').read_text())}
    assert recs['a']['status'] == 'running' and 'metrics' not in recs['a']   # never 'ok' with the old metrics
    assert not (out/'a'/'metrics.json').exists()
    assert recs['b']['status'] == 'ok' and recs['b']['metrics'] == {'value': 2}
    page = (out/'index.html').read_text()
    assert '<b>running</b>' in page  # the runner died before it could rewrite the page; the next write says 'interrupted'
    # --only runs one experiment and keeps the other rows
    r = subprocess.run(cli() + ['--nbs', str(nbs), '--out', str(out), '--only', 'b', '--no-progress'], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    recs = {x['name']: x for x in json.loads((out/'index.json').read_text())}
    assert list(recs) == ['a', 'b'] and recs['b']['status'] == 'ok'
    page = (out/'index.html').read_text()
    assert '<b>interrupted</b>' in page and 'rerun it' in page and '1 ok' in page
    assert not list(out.rglob('*.tmp-*'))


def test_malformed_profile(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_report import WRITE, cli, make_nb
    nbs = tmp_path/'nbs'; (nbs/'profiles').mkdir(parents=True)
    make_nb(nbs/'a.ipynb', WRITE, params="value = 1\nout_dir = None")
    (nbs/'profiles'/'bad.yml').write_text('a:\n  value: 2\n b: [1\n')
    r = subprocess.run(cli() + ['--nbs', str(nbs), '--out', str(tmp_path/'o'), '--profile', 'bad'], capture_output=True, text=True)
    assert r.returncode == 2 and 'bad.yml: line 3' in r.stderr and 'Traceback' not in r.stderr, r.stderr
