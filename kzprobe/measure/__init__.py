"""Measuring: protocol steps, the shared flow, experiments, their registry."""
