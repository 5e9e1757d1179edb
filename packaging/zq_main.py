"""The single-file binary's entry point: the ``zq`` console script (zq.cli:main).

PyInstaller's Python ignores ``PYTHONPATH`` (it builds sys.path itself); ``zq worker
MODULE:ATTR`` imports the user's module from the current directory, and from
``PYTHONPATH`` as the installed ``zq`` does, so its folders are put on sys.path here:
after the binary's own, so that a folder made for another Python (its extension
modules) cannot shadow what the binary carries.
"""

import multiprocessing
import os
import sys

if __name__ == "__main__":
    # A task pool process (executor="process", spawn) runs this binary again with
    # --multiprocessing-fork: freeze_support() turns it into the pool process.
    multiprocessing.freeze_support()
    if getattr(sys, "frozen", False):
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path += [p for p in extra if p not in sys.path]
    from zq.cli import main

    main()
