"""moegs_bench.adapters: placeholder package; see DESIGN.md section 2."""
