"""moegs_bench.reports: placeholder package; see DESIGN.md section 2."""
