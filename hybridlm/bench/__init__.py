"""Speed benchmarks (`hybridlm bench`): the Gated DeltaNet kernels, the whole model, and the transformers peer."""
