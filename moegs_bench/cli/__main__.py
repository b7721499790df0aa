"""``python -m moegs_bench.cli`` runs the ``moegs-bench`` command line."""

from moegs_bench.cli import main

main()
