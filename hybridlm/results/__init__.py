"""What the stages after training make of the checkpoints: the checkpoint prelude, val metrics, curves, the results
pages, alignment plots and the metrics of sampled readings."""
