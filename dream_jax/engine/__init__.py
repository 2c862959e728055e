"""The dream engine: the octave loop, gradients, update rules, config, compilation and placement."""
