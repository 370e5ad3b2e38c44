"""Rich consoles for the command line.

Why: rich lays a table out for the console's width, and a console that is not a terminal
(a CI log, ``make demo | tee``) is 80 columns, so the layer table's columns shrink to
"lay…" and "130…". In a log the width is :data:`LOG_WIDTH`, which every table bitloom
prints fits; on a terminal it is the terminal's.
"""

from __future__ import annotations

from rich.console import Console

#: columns of a console that is not a terminal
LOG_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    """A console for ``stdout`` (or ``stderr``), :data:`LOG_WIDTH` wide when not a terminal."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=LOG_WIDTH)
    return console
