"""moegs_bench.router: placeholder package; see DESIGN.md section 2."""
