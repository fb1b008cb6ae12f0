"""Benchmark: what difrob's integrity guarantees cost: the CRC-32 check of a memory-mapped .npz on open, the SHA-256 of a
shard store, and a crash-consistent save and verified load of a WRN-28-10 training state.

    python benchmarks/integrity.py           # a 1 GiB generated-data file and a WRN-28-10 train state
    python benchmarks/integrity.py --quick   # 256 MiB and a WRN-16-4

Reads are timed with the file in the page cache (the second of two opens): the cost of the check itself, the lower bound
a disk adds to. Writes reports/benchmarks/integrity.{json,md}.
"""
import argparse, tempfile, time
from pathlib import Path

import numpy as np
import torch

from difrob.core import file_sha256, load_train_state, save_weights, train_state
from difrob.data import load_generated, save_generated
from difrob.models import create_model
from difrob.train import make_optimizer

from common import write_report


def best_of(fn, n=2):
    """Seconds of the fastest of `n` calls (the first warms the page cache)."""
    out = []
    for _ in range(n):
        t = time.perf_counter(); fn(); out.append(time.perf_counter() - t)
    return min(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    quick = ap.parse_args().quick
    mib = 256 if quick else 1024
    rows = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        n = mib * 2**20 // (32 * 32 * 3)
        imgs = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        f = save_generated(d/'gen.npz', imgs, np.zeros(n, dtype=np.int64))
        del imgs
        size = f.stat().st_size / 2**30
        for what, fn in (('open .npz, CRC-32 checked (default)', lambda: load_generated(f)),
                         ('open .npz, verify=False', lambda: load_generated(f, verify=False)),
                         ('SHA-256 of the same bytes (what a shard store checks)', lambda: file_sha256(f))):
            s = best_of(fn)
            rows.append(dict(operation=what, size=f'{size:.2f} GiB', seconds=round(s, 3), GiB_per_s=round(size / s, 2) if s > 0.05 else '-'))
        arch = 'wrn-16-4' if quick else 'wrn-28-10'
        model = create_model(arch, in_channels=3)
        ema = create_model(arch, in_channels=3)
        opt = make_optimizer(model, 0.1)
        for p in model.parameters(): p.grad = torch.randn_like(p)
        opt.step()
        t, meta = train_state({'model': model, 'ema': ema}, opt)
        ck = d/'checkpoints'/'last'
        save_weights(ck, t, {}, **meta)  # a previous pair exists: the save keeps it until the new one is complete
        size = sum(v.numel() * v.element_size() for v in t.values()) / 2**30
        s = best_of(lambda: save_weights(ck, t, {}, **meta))
        rows.append(dict(operation=f'save a {arch} train state (model, EMA, momentum; fsync, pair kept)', size=f'{size:.2f} GiB',
                         seconds=round(s, 3), GiB_per_s=round(size / s, 2)))
        s = best_of(lambda: load_train_state(ck, {'model': model, 'ema': ema}, opt))
        rows.append(dict(operation=f'load and verify it (SHA-256, tensor list, shapes)', size=f'{size:.2f} GiB',
                         seconds=round(s, 3), GiB_per_s=round(size / s, 2)))
    table = write_report('integrity', 'What the integrity checks cost', rows,
                         {'operation': 'operation', 'size': 'size', 'seconds': 'seconds', 'GiB_per_s': 'GiB/s'})
    print(table)


if __name__ == '__main__':
    main()
