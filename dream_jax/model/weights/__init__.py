"""Weights: conversion from the published forms, and verified loading."""
from dream_jax.model.weights.store import (WEIGHTS_ENV, default_dir, load_labels, load_params,
                                           num_classes, read_manifest)

__all__ = ["WEIGHTS_ENV", "default_dir", "load_labels", "load_params", "num_classes",
           "read_manifest"]
