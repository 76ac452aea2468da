"""Hugging Face hub data sets: a local ``save_to_disk`` folder first, the hub second."""

from __future__ import annotations

from pathlib import Path

from surnn.errors import DataError


def hub_disk_dir(data_dir: Path, hub_name: str) -> Path:
    return data_dir / "hub" / hub_name


def load_hub(data_dir: Path, hub_name: str, allow_download: bool):
    """A ``datasets.DatasetDict`` from ``<data_dir>/hub/<name>`` (save_to_disk) or the hub;
    (None, reason) when neither works (offline, no cache, datasets missing)."""
    try:
        import datasets
    except ImportError:
        return None, "the datasets package is not installed"
    disk = hub_disk_dir(data_dir, hub_name)
    if disk.exists():
        try:
            return datasets.load_from_disk(str(disk)), f"save_to_disk folder {disk}"
        except Exception as e:  # noqa: BLE001 - any failure: report and fall through
            raise DataError(
                f"{disk} is not a readable datasets.save_to_disk folder ({e}); delete it or "
                f"re-save it with datasets.load_dataset({hub_name!r}).save_to_disk"
            ) from e
    if not allow_download:
        return None, "hub access disabled (hub: false)"
    try:
        return datasets.load_dataset(hub_name), f"hub {hub_name}"
    except Exception as e:  # noqa: BLE001 - offline hubs raise many types
        return None, f"datasets.load_dataset({hub_name!r}) failed: {type(e).__name__}"
