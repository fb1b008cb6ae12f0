"""Every dataset path of `difrob.data.load_dataset`, on small files in the datasets' exact on-disk layouts.

torchvision verifies CIFAR and SVHN files by MD5; the tests point those checksums at the small files they
write, so the code under test runs unchanged (including `download=True`, which finds the files in place).
"""
import hashlib, pickle, zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets as tvd
from PIL import Image

from difrob.data import TINY_URL, load_dataset


def md5(p): return hashlib.md5(Path(p).read_bytes()).hexdigest()


def write_cifar(root, monkeypatch, hundred=False, n=6, seed=0):
    rng = np.random.default_rng(seed)
    cls = tvd.CIFAR100 if hundred else tvd.CIFAR10
    base = root/cls.base_folder
    base.mkdir(parents=True)
    label_key = 'fine_labels' if hundred else 'labels'
    names = [f'class{i}' for i in range(100 if hundred else 10)]
    truth = {}
    for lst in ('train_list', 'test_list'):
        new, xs, ys = [], [], []
        for fname, _ in getattr(cls, lst):
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = rng.integers(0, len(names), n).tolist()
            with open(base/fname, 'wb') as f: pickle.dump({'data': data, label_key: labels, 'batch_label': fname}, f)
            new.append([fname, md5(base/fname)]); xs.append(data); ys += labels
        monkeypatch.setattr(cls, lst, new)
        truth[lst] = (np.concatenate(xs).reshape(-1, 3, 32, 32), np.array(ys))
    with open(base/cls.meta['filename'], 'wb') as f: pickle.dump({cls.meta['key']: names}, f)
    monkeypatch.setattr(cls, 'meta', {**cls.meta, 'md5': md5(base/cls.meta['filename'])})
    return truth, names


@pytest.mark.parametrize('hundred', [False, True])
@pytest.mark.parametrize('download', [False, True])
def test_cifar(tmp_path, monkeypatch, hundred, download):
    truth, names = write_cifar(tmp_path, monkeypatch, hundred)
    name = 'cifar100' if hundred else 'cifar10'
    for split, lst in (('train', 'train_list'), ('test', 'test_list')):
        d = load_dataset(name, split, root=tmp_path, download=download)
        x, y = truth[lst]
        assert d.x.shape == (len(y), 3, 32, 32) and d.x.dtype == torch.float32
        assert torch.equal(d.x, torch.from_numpy(x).float() / 255)
        assert d.y.tolist() == y.tolist() and d.classes == names
    gray = load_dataset(name, 'test', root=tmp_path, channels=1, size=16)
    assert gray.shape == (1, 16, 16) and 0 <= gray.x.min() and gray.x.max() <= 1


def test_cifar_missing_and_corrupt(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match='cifar-10-batches-py.*download=True'):
        load_dataset('cifar10', root=tmp_path)
    write_cifar(tmp_path, monkeypatch)
    f = tmp_path/'cifar-10-batches-py'/'data_batch_3'
    f.write_bytes(f.read_bytes()[:-10])  # truncated file: its checksum no longer matches
    with pytest.raises(FileNotFoundError, match='corrupted'):
        load_dataset('cifar10', root=tmp_path)


@pytest.mark.parametrize('split', ['train', 'test', 'extra'])
def test_svhn(tmp_path, monkeypatch, split):
    rng = np.random.default_rng(1)
    n = 7
    X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = np.array([[10], [1], [2], [3], [10], [9], [5]], dtype=np.uint8)  # SVHN stores the digit 0 as label 10
    fname = f'{split}_32x32.mat'
    scipy.io.savemat(tmp_path/fname, {'X': X, 'y': y})
    monkeypatch.setitem(tvd.SVHN.split_list, split, [tvd.SVHN.split_list[split][0], fname, md5(tmp_path/fname)])
    d = load_dataset('svhn', split, root=tmp_path)
    assert d.y.tolist() == [0, 1, 2, 3, 0, 9, 5]
    assert torch.equal(d.x, torch.from_numpy(X).permute(3, 2, 0, 1).float() / 255)
    assert d.classes == [str(i) for i in range(10)]


def write_tiny(base, n_train=3, val=(('val_0.JPEG', 'n02'), ('val_1.JPEG', 'n01'), ('val_2.JPEG', 'n03'))):
    """A miniature tiny-imagenet-200 folder: 3 classes, solid-colour JPEGs (so JPEG keeps their values)."""
    wnids = ['n03', 'n01', 'n02']  # wnids.txt is unsorted in the official archive too
    colour = {'n01': (255, 0, 0), 'n02': (0, 255, 0), 'n03': (0, 0, 255)}
    (base/'val'/'images').mkdir(parents=True)
    (base/'wnids.txt').write_text('\n'.join(wnids) + '\n')
    (base/'words.txt').write_text('n01\tgoldfish, Carassius auratus\nn02\tfire salamander\nn03\tbullfrog, Rana catesbeiana\nn99\tunused\n')
    for w in wnids:
        (base/'train'/w/'images').mkdir(parents=True)
        (base/'train'/w/f'{w}_boxes.txt').write_text('')
        for i in range(n_train): Image.new('RGB', (64, 64), colour[w]).save(base/'train'/w/'images'/f'{w}_{i}.JPEG')
    lines = []
    for fn, w in val:
        Image.new('RGB', (64, 64), colour.get(w, (9, 9, 9))).save(base/'val'/'images'/fn)
        lines.append(f'{fn}\t{w}\t0\t0\t63\t63')
    (base/'val'/'val_annotations.txt').write_text('\n'.join(lines) + '\n')
    return colour


def test_tinyimagenet(tmp_path):
    colour = write_tiny(tmp_path/'tiny-imagenet-200')
    tr = load_dataset('tinyimagenet', 'train', root=tmp_path)
    assert tr.classes == ['goldfish', 'fire salamander', 'bullfrog']  # sorted wnids, names from words.txt
    assert tr.x.shape == (9, 3, 64, 64) and tr.y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    te = load_dataset('tinyimagenet', 'test', root=tmp_path)
    assert te.y.tolist() == [1, 0, 2]
    for img, w in zip(te.x, ['n02', 'n01', 'n03']):  # each image has the colour of its class
        assert torch.allclose(img.mean((1, 2)), torch.tensor(colour[w]) / 255, atol=0.02)
    assert load_dataset('tinyimagenet', 'test', root=tmp_path, size=32).shape == (3, 32, 32)


def test_tinyimagenet_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='download=True'):
        load_dataset('tinyimagenet', root=tmp_path)
    write_tiny(tmp_path/'tiny-imagenet-200', val=(('v.JPEG', 'n77'),))
    with pytest.raises(ValueError, match="names class 'n77'"):
        load_dataset('tinyimagenet', 'test', root=tmp_path)


def test_tinyimagenet_download(tmp_path, monkeypatch):
    """download=True fetches the official archive: the download is replaced by a local zip of the same layout."""
    src = tmp_path/'src'
    write_tiny(src/'tiny-imagenet-200')
    archive = tmp_path/'tiny-imagenet-200.zip'
    with zipfile.ZipFile(archive, 'w') as z:
        for p in sorted((src).rglob('*')): z.write(p, p.relative_to(src))
    calls = []
    def fake_download(url, download_root, *a, **k):
        calls.append(url)
        with zipfile.ZipFile(archive) as z: z.extractall(download_root)
    import torchvision.datasets.utils as tvu
    monkeypatch.setattr(tvu, 'download_and_extract_archive', fake_download)
    root = tmp_path/'root'
    d = load_dataset('tinyimagenet', 'train', root=root, download=True)
    assert calls == [TINY_URL] and len(d) == 9
    load_dataset('tinyimagenet', 'train', root=root, download=True)
    assert calls == [TINY_URL]  # present now: not fetched again


def test_default_root(monkeypatch, tmp_path):
    from difrob.data import default_root
    monkeypatch.setenv('DIFROB_DATA', str(tmp_path))
    assert default_root() == tmp_path
    monkeypatch.delenv('DIFROB_DATA')
    assert default_root() == Path('~/.cache/difrob/data').expanduser()
