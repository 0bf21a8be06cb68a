"""Results pages: training curves, the sample gallery, alignment plots and the metrics of sampled readings."""
