"""moegs-bench: benchmark and ablation toolkit for MoE-GS.

Importing the package is cheap: torch and the heavy modules load only when used.
"""

__version__ = "0.1.0"
