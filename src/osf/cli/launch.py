"""``osf train --nproc N`` runs its ranks through this module in place of ``python -m torch.distributed.run``:
the same launcher and arguments, but a failed run ends with the exit status of the rank that failed first
and one line, instead of torchrun's traceback and failure report (each rank already said its own error)."""
from __future__ import annotations

import logging
import signal
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run

# exit statuses whose cause the rank printed itself: osf's one-line errors, Ctrl-C
SAID_BY_THE_RANK = (2, 130)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if "--debug" not in args.training_script_args:  # torchrun's own log lines (SIGTERM sent, rank failed)
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        if code < 0:  # killed by a signal
            print(f"osf train: rank {rank} was killed by {signal.Signals(-code).name} (out of memory?); the run "
                  "resumes from its last checkpoint when the same command is run again", file=sys.stderr)
            return 128 - code
        if code not in SAID_BY_THE_RANK:
            print(f"osf train: rank {rank} failed with exit status {code} (its error is above)", file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
