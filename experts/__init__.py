"""The built-in experts (imported as ``moegs_bench.experts``), one module per method, each an
:class:`~moegs_bench.adapters.base.Expert` with ``tiny`` and ``paper`` profiles (README, "Experts"):

- ``fourdgs``: 4DGaussians (Wu et al., CVPR 2024; hustvl/4DGaussians);
- ``ed3dgs``: E-D3DGS (Bae et al., ECCV 2024; JeongminB/E-D3DGS);
- ``ex4dgs``: Ex4DGS (Lee et al., NeurIPS 2024; juno181/Ex4DGS);
- ``stg``: Spacetime Gaussians (Li et al., CVPR 2024; oppo-us-research/SpacetimeGaussians);
- ``static3dgs``: static 3DGS (Kerbl et al., SIGGRAPH 2023), the no-deformation baseline.

``_profiles`` holds the CPU ``tiny`` training schedule they share. The registry ids are in
:data:`moegs_bench.adapters.registry.BUILTIN_EXPERTS`.
"""
