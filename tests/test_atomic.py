"""Atomic writes under a real crash: a process killed with SIGKILL half way through a write."""
import os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest

from difrob.core import file_sha256
from difrob.data import ShardStore, load_generated, save_generated

N = 20_000  # 20,000 × 32×32×3 = 61 MB: a write that takes long enough to be interrupted


def kill_when_writing(folder: Path, code: str, pattern: str):
    """Run `code` in a new Python process and SIGKILL it once a temporary file matching `pattern` has data."""
    proc = subprocess.Popen([sys.executable, '-c', textwrap.dedent(code)], cwd=folder)
    deadline = time.time() + 120
    while time.time() < deadline:
        tmps = [p for p in folder.rglob(pattern) if p.stat().st_size > 1_000_000]
        if tmps: break
        if proc.poll() is not None: pytest.fail(f'writer finished (rc={proc.returncode}) before it could be interrupted')
        time.sleep(0.005)
    else: pytest.fail('no temporary file appeared')
    proc.send_signal(signal.SIGKILL); proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return tmps


WRITER = """
import numpy as np, time
import difrob.data as D
imgs = np.random.default_rng(1).integers(0, 256, ({n}, 32, 32, 3), dtype=np.uint8)
orig = D.np.savez
def slow_savez(f, **arrays):  # a slow disk: write the image array in pieces
    import numpy.lib.format as fmt, zipfile
    with zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED) as z:
        with z.open('image.npy', 'w', force_zip64=True) as g:
            fmt.write_array_header_2_0(g, {{'descr': '|u1', 'fortran_order': False, 'shape': arrays['image'].shape}})
            for chunk in np.array_split(arrays['image'], 200): g.write(chunk.tobytes()); g.flush(); time.sleep(0.02)
        with z.open('label.npy', 'w') as g: fmt.write_array(g, arrays['label'])
D.np.savez = slow_savez
{call}
"""


def test_killed_save_generated_keeps_previous_file(tmp_path):
    old = np.zeros((5, 32, 32, 3), np.uint8)
    target = save_generated(tmp_path/'gen.npz', old, np.arange(5))
    before = file_sha256(target)
    call = f"D.save_generated(r'{target}', imgs, np.zeros({N}, dtype=int))"
    kill_when_writing(tmp_path, WRITER.format(n=N, call=call), 'gen.npz.tmp-*')
    assert file_sha256(target) == before  # the previous file is intact
    g = load_generated(target)
    assert len(g) == 5 and (g.images[:] == old).all()
    assert load_generated(tmp_path/'gen*.npz').sources == [target]  # the stray temporary file is never read


def test_killed_shard_write_is_not_recorded(tmp_path):
    store = ShardStore(tmp_path/'s', meta={'model': 'm'})
    rng = np.random.default_rng(0)
    store.write_shard('shard-000', rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), np.arange(10) % 3)
    manifest = (tmp_path/'s'/'manifest.json').read_bytes()
    call = f"D.ShardStore(r'{tmp_path/'s'}').write_shard('shard-001', imgs, np.zeros({N}, dtype=int))"
    kill_when_writing(tmp_path, WRITER.format(n=N, call=call), 'shard-001.npz.tmp-*')
    assert (tmp_path/'s'/'manifest.json').read_bytes() == manifest
    assert store.has_shard('shard-000') and not store.has_shard('shard-001')
    assert not (tmp_path/'s'/'shard-001.npz').exists()
    assert len(load_generated(tmp_path/'s')) == 10  # the store still opens, with its one finished shard
    # the rerun writes the missing shard and the store is complete
    store.write_shard('shard-001', rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8), np.arange(4))
    assert len(load_generated(tmp_path/'s')) == 14


# A checkpoint pair killed at every file-system step of its save. The writer counts its calls to the operations that
# change what is on disk (fsync, link, rename, unlink) and SIGKILLs itself just before the k-th; k runs from 1 until
# a save completes. After every kill, loading must give the previous checkpoint or the new one, exactly.
CHECKPOINT_WRITER = """
import os, signal, sys, torch
from difrob.core import save_weights
k, calls = int(sys.argv[1]), [0]
def counted(fn):
    def f(*a, **kw):
        calls[0] += 1
        if calls[0] == k: os.kill(os.getpid(), signal.SIGKILL)
        return fn(*a, **kw)
    return f
for name in ('fsync', 'link', 'replace', 'rename', 'unlink'): setattr(os, name, counted(getattr(os, name)))
save_weights(sys.argv[2], {'w': torch.full((1000,), 2.0), 'b': torch.arange(7)}, {'v': 2}, epoch=2)
print('completed', calls[0])
"""


def test_checkpoint_survives_a_kill_at_every_step(tmp_path):
    import torch
    from difrob.core import load_weights, save_weights
    old = {'w': torch.full((1000,), 1.0), 'b': torch.arange(7)}
    outcomes = []
    for k in range(1, 40):
        d = tmp_path/f'k{k}'
        save_weights(d/'ck', old, {'v': 1}, epoch=1)
        r = subprocess.run([sys.executable, '-c', CHECKPOINT_WRITER, str(k), str(d/'ck')], capture_output=True, text=True)
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            sd, meta = load_weights(d/'ck')  # never an error: the old pair or the new one
        got = meta['epoch']
        assert got in (1, 2) and torch.equal(sd['w'], torch.full((1000,), float(got))) and meta['config'] == {'v': got}, (k, meta)
        if r.returncode == 0:
            assert got == 2 and sorted(p.name for p in d.iterdir() if 'tmp' not in p.name) == ['ck.json', 'ck.safetensors']
            break
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        outcomes.append(got)
        save_weights(d/'ck', {'w': torch.full((1000,), 3.0), 'b': torch.arange(7)}, {'v': 3}, epoch=3)  # the next save mends it
        assert load_weights(d/'ck')[1]['epoch'] == 3 and not list(d.glob('ck.prev.*'))
    else: pytest.fail('the save never completed')
    assert len(outcomes) >= 6 and outcomes[0] == 1 and outcomes[-1] == 2, outcomes  # kills before and after the commit point
