"""One module per DVC stage: read its params section, call library code in `hybridlm`, write declared outputs atomically."""
