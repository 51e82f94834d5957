"""GLoMo (Global-Local Modal fusion, ACM MM 2024) block modules (configs: :mod:`composer.configs.glomo`).

``coding``: unimodal coding of global and local representations (eqs. 1-4);
``fusion``: the global-guided fusion module (eqs. 8-13) and its ablation strategies.
The modality-specific mixture of experts (eqs. 5-7) is the general ``moe`` block
(:mod:`composer.blocks.moe`).
"""
