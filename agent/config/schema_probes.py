"""The target's `probes:` block, assembled from the probe registry (probes.registry).

Each probe module owns the model of its `probes.NAME` block; this module only puts them
together, in registry order, so a new probe's block appears here without an edit. Keys, types,
defaults and error texts are the probe's settings model's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field, create_model

from probes.registry import PROBES
from probes.settings import Strict
from probes.specs import ProbeSpec


def _field(spec: ProbeSpec[Any]) -> tuple[Any, Any]:
    """(type, default) of one probe's block."""
    if spec.optional:  # off unless the block is given
        return spec.settings | None, None
    default = spec.settings()
    try:
        hash(default)
    except TypeError:
        # pydantic deep-copies an unhashable default for every target (a third of
        # check-config's time for 5,000 targets); a factory builds a fresh one instead
        return spec.settings, Field(default_factory=spec.settings)
    return spec.settings, default


def probes_model(specs: Mapping[str, ProbeSpec[Any]]) -> type[Strict]:
    """A strict model with one field per probe, in the order given."""
    fields: dict[str, Any] = {name: _field(spec) for name, spec in specs.items()}
    return create_model("ProbesConfig", __base__=Strict, __module__=__name__, **fields)


if TYPE_CHECKING:

    class ProbesConfig(Strict):
        # one attribute per registered probe: its settings model, or None when optional
        def __getattr__(self, name: str) -> Any: ...

else:
    ProbesConfig = probes_model(PROBES)


def probe_names() -> tuple[str, ...]:
    """The probes a config can name (`slo.probes.<name>`), in run order."""
    return tuple(ProbesConfig.model_fields)
