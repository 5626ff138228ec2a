"""Dataset sources: each turns one kind of dataset into the :class:`~smaf.data.index.DatasetIndex`.

An adapter is a function ``build(settings, *, name, roles) -> DatasetIndex``:

* ``settings``: the dataset's ``datasets.<name>`` config entry (plus the folders the workflow
  resolved for it);
* ``roles``: :data:`TRAINVAL_ROLES` for the training/evaluation index, or ``("test",)`` for the
  index of the test images (predicted, never trained on or scored);
* it returns the images with their paths, split roles and image-level labels, unvalidated:
  :func:`smaf.data.prepare.prepare_dataset` checks and writes what every source returns.

A new source is one module here with a ``build`` function, an entry in :data:`ADAPTERS`, and
its settings in ``workflow/schemas/config.schema.yaml``; no stage changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from smaf.data.index import DatasetIndex
from smaf.data.sources import synthetic, voc
from smaf.errors import ConfigError

TRAINVAL_ROLES = voc.TRAINVAL_ROLES

Adapter = Callable[..., DatasetIndex]

#: Source name (config ``datasets.<name>.source``) → adapter.
ADAPTERS: dict[str, Adapter] = {
    "synthetic": synthetic.build,
    "voc": voc.build,
}


def build_index(
    source: str,
    settings: Mapping[str, Any],
    *,
    name: str,
    roles: Sequence[str] = TRAINVAL_ROLES,
) -> DatasetIndex:
    """Run the adapter of ``source``; its index is not validated yet."""
    try:
        adapter = ADAPTERS[source]
    except KeyError:
        raise ConfigError(
            f"datasets.{name}.source: unknown source {source!r}; "
            f"expected one of {', '.join(sorted(ADAPTERS))}."
        ) from None
    index = adapter(settings, name=name, roles=roles)
    index.info.setdefault("source", source)
    return index
