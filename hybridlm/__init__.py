"""hybridlm: DVC pipeline and model code for hybrid Gated DeltaNet + attention speech codec LMs."""
