"""Design-space exploration over number formats and foldings (``bitloom dse``).

``sweep`` evaluates (weights, activations) format pairs in parallel: accuracy on the golden
model, resources and throughput from the cost model, Pareto fronts marked; ``add_arguments``
/``command`` are the CLI subcommand. See docs/dse.md.
"""

from bitloom.dse.cli import add_arguments, command
from bitloom.dse.dse import COLUMNS, DEFAULT_FORMATS, format_pairs, pareto, sweep
from bitloom.emit.pareto import pareto_svg, read_csv

__all__ = ["COLUMNS", "DEFAULT_FORMATS", "add_arguments", "command", "format_pairs", "pareto",
           "pareto_svg", "read_csv", "sweep"]
