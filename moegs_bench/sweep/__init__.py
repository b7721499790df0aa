"""Sweeps: ablations as sets of points, run locally or on SLURM (README, "Sweeps").

A sweep spec (:mod:`moegs_bench.sweep.spec`, YAML) names a command (``run``, ``prune`` or
``distill``), its settings, scenes, seeds and axes. :mod:`moegs_bench.sweep.plan` expands it into
points, each identified by the hash of its resolved configuration, in stages (experts first, so
that each expert is trained once; then the mixture runs; then the prunings or distillations
that start from them). :mod:`moegs_bench.sweep.folder` keeps a sweep's folder (the frozen spec,
the plan, one folder per point with its ``status.json`` and its normal run folder);
:mod:`moegs_bench.sweep.execute` runs one point; :mod:`moegs_bench.sweep.launchers` runs many
(in process, in a bounded pool of local processes, or as SLURM job arrays through submitit);
:mod:`moegs_bench.sweep.collect` gathers every finished point's records into one table.

Nothing here imports torch at import time.
"""
