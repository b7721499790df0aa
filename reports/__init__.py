"""moegs_bench.reports: gate-map figures and videos (``gate_maps``); LaTeX tables and plots come later."""
