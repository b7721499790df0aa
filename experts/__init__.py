"""moegs_bench.experts: placeholder package; see DESIGN.md section 2."""
