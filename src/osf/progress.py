"""The progress bars of training, search and export: ``tqdm`` (a widget in notebooks), redrawn at most
10 times a second on a terminal and every 10 seconds where stderr is not one (a log file, CI, ``nohup``),
so a long run logs a line now and then instead of one per step."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm

TERMINAL_INTERVAL_S = 0.1  # tqdm's own default
LOG_INTERVAL_S = 10.0  # tqdm redraws at least every maxinterval (10 s) anyway


def progress_bar(*, total: int, desc: str, unit: str, disable: bool = False, initial: int = 0) -> tqdm:
    """A bar on stderr; update its postfix with ``refresh=False`` so only the pace above redraws it."""
    interactive = getattr(sys.stderr, "isatty", lambda: False)()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=disable, dynamic_ncols=True,
                mininterval=TERMINAL_INTERVAL_S if interactive else LOG_INTERVAL_S)


def describe(bar: tqdm, desc: str) -> None:
    """Set the bar's description, redrawn at once on a terminal only (a log shows it with its next line)."""
    if not bar.disable:
        bar.set_description(desc, refresh=bar.mininterval <= TERMINAL_INTERVAL_S)
