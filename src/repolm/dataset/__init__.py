"""The build stage (`repolm build`): packed training sequences, instruction pairs and evaluation
sets, written to `OUT/dataset/`. The package is named after its outputs; the stage keeps the
name users type."""
