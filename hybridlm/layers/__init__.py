"""The model's layers, one module per kind of layer (as flash-linear-attention's ``layers/`` over its ``ops/``).

hybridlm.model composes them into HybridLM; :mod:`hybridlm.layers.registry` says which schedule letter builds which
block. The kernels they call live in hybridlm.ops.
"""
