"""The application layer: whole experiments built from the core, the experts, the router and the
reports (``moegs-bench run``). Nothing below this package imports it."""
