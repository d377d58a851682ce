"""`python tests/killer.py N <retain arguments>`: the retain CLI, killed by SIGKILL right after
the N-th task of a run is committed (checkpoint and state.json written), as a crash or an
out-of-memory kill would; the resume tests' fault, kept out of the production loop."""

import os
import signal
import sys

from retain.cli import main
from retain.rundir import RunDir

_commit = RunDir.commit_task


def commit_then_die(self, task_index, *args, **kwargs):
    _commit(self, task_index, *args, **kwargs)
    if task_index + 1 == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    RunDir.commit_task = commit_then_die
    sys.exit(main(sys.argv[2:]))
