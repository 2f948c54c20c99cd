"""Experiment classes from the registry's ``"module:Class"`` strings, imported on first use.

Apart from :mod:`kzprobe.measure.registry` so the registry stays pure data: this module is
the only one that imports experiments by name (the import-graph rule test counts its edges).
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from kzprobe.measure.registry import spec_for

if TYPE_CHECKING:
    from kzprobe.measure.context import Experiment


@cache
def experiment_for(scheme: str) -> Experiment:
    """Import (lazily, once) and instantiate the experiment registered for ``scheme``."""
    module_name, _, class_name = spec_for(scheme).experiment.partition(":")
    experiment: Experiment = getattr(importlib.import_module(module_name), class_name)()
    return experiment
