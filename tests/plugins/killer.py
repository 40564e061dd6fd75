"""Run the dnas CLI, SIGKILLing itself at a chosen point of the N-th checkpoint write.

    DNAS_KILL_AT=midwrite:N   die with half of checkpoint N's bytes in the temporary file
    DNAS_KILL_AT=rename:N     die between moving checkpoint.pt aside and putting the new one in place
"""
import os
import signal
import sys

import dnas._io as io_

point, n = os.environ["DNAS_KILL_AT"].split(":")
n = int(n)
writes = 0
real_write, real_replace = io_.atomic_write_bytes, os.replace


def write(path, data):
    global writes
    if ".checkpoint.next" in str(path):
        writes += 1
        if point == "midwrite" and writes == n:
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
    return real_write(path, data)


def replace(src, dst):
    real_replace(src, dst)
    if point == "rename" and writes == n and str(dst).endswith("checkpoint.prev.pt"):
        os.kill(os.getpid(), signal.SIGKILL)


io_.atomic_write_bytes = write
os.replace = replace

from dnas.cli import main  # noqa: E402

sys.exit(main(sys.argv[1:]))
