"""`difrob-generate` as users run it: separate processes (as under torchrun), a SIGKILL mid-run and a rerun,
merging, filtering, and bad input. The images must be bit-identical whatever the batch size, the number of
processes or where the run was interrupted."""
import json, os, signal, subprocess, sys, time
from pathlib import Path

import numpy as np
import pytest
import torch

from difrob.data import ShardStore, load_generated
from difrob.diffusion import create_denoiser, save_denoiser
from difrob.models import SmallCNN, save_model

EXE = str(Path(sys.executable).with_name('difrob-generate'))
ARGS = ['--n-per-class', '6', '--classes', '2', '5', '--steps', '3', '--shard-size', '2', '--net-batch', '4',
        '--device', 'cpu', '--quiet']


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp('model')
    save_denoiser(d/'edm', create_denoiser(8, 1, 10, 'tiny'))
    return str(d/'edm')


def run(*args, env=None, check=True):
    p = subprocess.run([EXE, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)
    if check: assert p.returncode == 0, p.stderr[-3000:]
    return p


def test_processes_and_batch_sizes_agree(model, tmp_path):
    run(model, str(tmp_path/'one'), *ARGS, '--batch-size', '7', '--merge', str(tmp_path/'one.npz'))
    procs = [subprocess.Popen([EXE, model, str(tmp_path/'two'), *ARGS, '--batch-size', '16'],
                              env={**os.environ, 'RANK': str(r), 'WORLD_SIZE': '2'}, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    for p in procs: assert p.wait(timeout=300) == 0, p.stderr.read()[-3000:]
    one, two = load_generated(tmp_path/'one'), load_generated(tmp_path/'two')
    assert len(one) == 12 and np.bincount(one.labels).tolist() == [0, 0, 6, 0, 0, 6]
    np.testing.assert_array_equal(one.images[:], two.images[:])
    np.testing.assert_array_equal(one.labels, two.labels)
    merged = load_generated(tmp_path/'one.npz')            # the DM-Improves-AT format: one .npz, image + label
    np.testing.assert_array_equal(merged.images[:], one.images[:])
    recs = ShardStore(tmp_path/'two').shards
    assert {r['nfe'] for r in recs.values()} == {5} and all(r['images_per_second'] > 0 for r in recs.values())


def test_sigkill_then_rerun_is_identical(model, tmp_path):
    ref = tmp_path/'ref'
    run(model, str(ref), *ARGS)
    out = tmp_path/'killed'
    # slow the sampler down so the kill lands between shards, after at least one shard is recorded
    slow = ("import time, difrob.generate as G; f = G.generate_images\n"
            "def g(*a, **k): time.sleep(0.4); return f(*a, **k)\n"
            "G.generate_images = g\nimport sys; sys.exit(G.difrob_generate(sys.argv[1:]))\n")
    p = subprocess.Popen([sys.executable, '-c', slow, model, str(out), *ARGS])
    deadline = time.time() + 120
    while time.time() < deadline:
        mf = out/'manifest.json'
        if mf.exists() and len(json.loads(mf.read_text())['shards']) >= 2: break
        assert p.poll() is None, 'finished before it could be killed'
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    done = len(ShardStore(out).shards)
    assert 2 <= done < 6, done
    run(model, str(out), *ARGS)                            # the rerun resumes
    a, b = load_generated(ref), load_generated(out)        # checksums verified on load
    np.testing.assert_array_equal(a.images[:], b.images[:])
    assert len(ShardStore(out).shards) == 6


def test_filter_command(model, tmp_path):
    torch.manual_seed(0)
    save_model(tmp_path/'clf', SmallCNN(num_classes=10, in_channels=1))
    run(model, str(tmp_path/'s'), *ARGS, '--filter-model', str(tmp_path/'clf'), '--top-fraction', '0.5')
    kept = load_generated(tmp_path/'s'/'filtered-top0.5.npz')
    assert np.bincount(kept.labels).tolist() == [0, 0, 3, 0, 0, 3]


def test_bad_input_is_refused(model, tmp_path):
    p = run(model, str(tmp_path/'x'), *ARGS[:2], '--classes', '3', '10', *ARGS[5:], check=False)
    assert p.returncode != 0 and "outside the model's classes" in p.stderr
    p = run(model, str(tmp_path/'x'), *[a if a != '3' else '0' for a in ARGS], check=False)
    assert p.returncode != 0 and 'steps must be' in p.stderr
    assert not (tmp_path/'x').exists()
    run(model, str(tmp_path/'s'), *ARGS)
    before = (tmp_path/'s'/'manifest.json').read_bytes()
    torch.manual_seed(1)
    save_denoiser(tmp_path/'other', create_denoiser(8, 1, 10, 'tiny'))
    p = run(str(tmp_path/'other'), str(tmp_path/'s'), *ARGS, check=False)
    assert p.returncode != 0 and "model_sha256" in p.stderr
    assert (tmp_path/'s'/'manifest.json').read_bytes() == before
