"""FolderLock across processes (filelock's SQLite read-write lock): shared holders coexist, an exclusive one is
refused while anyone holds the folder, and a holder killed with SIGKILL frees it."""
import os, subprocess, sys

import pytest

from difrob.core import FolderInUse, FolderLock

HOLD = """import sys, time
from difrob.core import FolderLock
FolderLock(sys.argv[1], shared=sys.argv[2] == 'shared').acquire()
print('held', flush=True)
time.sleep(120)
"""


def holder(folder, mode):
    p = subprocess.Popen([sys.executable, '-c', HOLD, str(folder), mode], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'held'
    return p


def test_shared_holders_coexist_and_exclude_a_run(tmp_path):
    a = holder(tmp_path, 'shared')
    try:
        b = holder(tmp_path, 'shared')  # a second rank of the same generation joins
        try:
            assert {h['pid'] for h in FolderLock(tmp_path).holders()} == {a.pid, b.pid}
            with pytest.raises(FolderInUse, match=f'pid {a.pid}'): FolderLock(tmp_path).acquire()
        finally: b.kill(); b.wait()
    finally: a.kill(); a.wait()
    with FolderLock(tmp_path) as lock:  # killed holders free the folder; their records are forgotten
        assert [h['pid'] for h in lock.holders()] == [os.getpid()]


def test_a_run_excludes_shared_writers(tmp_path):
    a = holder(tmp_path, 'exclusive')
    try:
        with pytest.raises(FolderInUse, match=f'pid {a.pid}'): FolderLock(tmp_path, shared=True).acquire()
    finally: a.kill(); a.wait()
    with FolderLock(tmp_path, shared=True) as lock: assert lock.rw is not None
