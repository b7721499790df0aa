"""The expert interface and how experts are found (imported as ``moegs_bench.adapters``).

- :mod:`moegs_bench.adapters.base`: :class:`~moegs_bench.adapters.base.Expert`, the base class
  every expert subclasses, with its configuration (``ExpertConfig``), optimiser groups
  (``ParamGroup``) and scene initialisation (``SceneInit``);
- :mod:`moegs_bench.adapters.registry`: the built-in, entry-point and ``--plugin`` experts
  (``moegs-bench experts list``);
- :mod:`moegs_bench.adapters.testing`: the expert contract, ``check_expert(cls)``
  (``moegs-bench experts check``).

README, "Adding an expert".
"""
