"""One module per kind of target; each declared in kzprobe.measure.registry."""
