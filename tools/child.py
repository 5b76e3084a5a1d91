"""Run a module as a child of the stack that ends when the stack ends, however the stack ends.

`python -m tools.child PARENT_PID MODULE [ARGS...]` runs MODULE as `python -m MODULE ARGS...` would,
in this same process, after asking the kernel to send it SIGTERM when its parent dies (Linux
`prctl(PR_SET_PDEATHSIG)`): a SIGKILL of tools.stack, an OOM kill or a closed terminal still
reaches every child, which then stops as on any SIGTERM (the moto server saves its state). Where
prctl is missing (macOS), a thread watches the parent instead. If the parent is already gone when
this starts (it died between fork and prctl), the child ends at once. The kernel sends the signal
when the thread that started the child ends: tools.stack starts its children from its main thread.
"""
import ctypes
import os
import runpy
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def _watch(parent):
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def bind_to_parent(parent):
    """SIGTERM to this process when its parent (pid `parent`) ends; False when the parent has already ended."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()
    return os.getppid() == parent


def main(argv):
    if len(argv) < 2:
        print("usage: python -m tools.child PARENT_PID MODULE [ARGS...]", file=sys.stderr)
        return 2
    parent, module = int(argv[0]), argv[1]
    if not bind_to_parent(parent):
        return 0
    sys.argv = [module, *argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
