"""Design-space exploration over number formats and foldings (``bitloom dse``).

``sweep`` evaluates (weights, activations) format pairs in parallel: accuracy on the golden
model, resources and throughput from the cost model, Pareto fronts marked; ``add_arguments``
/``command`` are the CLI subcommand. See docs/dse.md.
"""

from bitloom.dse.cli import add_arguments, command
from bitloom.dse.dse import COLUMNS, DEFAULT_FORMATS, format_pairs, pareto, read_csv, sweep
from bitloom.dse.plot import pareto_svg

__all__ = ["COLUMNS", "DEFAULT_FORMATS", "add_arguments", "command", "format_pairs", "pareto",
           "pareto_svg", "read_csv", "sweep"]
