"""The groups of targets the daemon sweeps, each on its own schedule.

``[targets] urls/files`` with ``[schedule]`` is the group ``default``; each
``[[targets.groups]]`` (a watchlist, say) is another. Targets carry their group's name
(``Target.group``), so one flat target list, as loaded, splits back into groups here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

from kzprobe.config import DEFAULT_GROUP, Config
from kzprobe.targets import Target, load_targets


@dataclass(frozen=True, slots=True)
class SweepGroup:
    """A group's targets and schedule; the interval is also its priority (shorter first)."""

    name: str
    interval: float
    jitter: float
    targets: tuple[Target, ...]


def load_group_targets(config: Config) -> tuple[list[Target], list[str]]:
    """Every group's targets, each tagged with its group (raises TargetError); a URL listed
    in two groups is measured in both schedules."""
    targets, warnings = load_targets(config.targets.urls, config.targets.files)
    for group in config.targets.groups:
        found, problems = load_targets(group.urls, group.files,
                                       where=f"[targets.groups {group.name}]")
        targets.extend(dataclasses.replace(t, group=group.name, body_bytes=group.body_bytes)
                       for t in found)
        warnings.extend(problems)
    return targets, warnings


def sweep_groups(config: Config, targets: Iterable[Target]) -> tuple[SweepGroup, ...]:
    """The groups with targets, the default group first, in config order."""
    members: dict[str, list[Target]] = {}
    for target in targets:
        members.setdefault(target.group, []).append(target)
    schedule = config.schedule
    groups = [SweepGroup(DEFAULT_GROUP, schedule.interval, schedule.jitter,
                         tuple(members.pop(DEFAULT_GROUP, ())))]
    for group in config.targets.groups:
        jitter = schedule.jitter if group.jitter is None else group.jitter
        groups.append(SweepGroup(group.name, group.interval, jitter,
                                 tuple(members.pop(group.name, ()))))
    return tuple(group for group in groups if group.targets)
