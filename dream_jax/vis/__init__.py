"""Feature visualisation: parameterisations, transformations and the optimisation of channels."""
