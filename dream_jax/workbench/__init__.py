"""The interpretability workbench: exemplars, attribution, scores and the microscope site."""
