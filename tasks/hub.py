"""Hugging Face hub data sets: a local ``save_to_disk`` folder first, the hub second."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from surnn.errors import DataError

PROBE_TIMEOUT_S = 3.0
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def _offline_mode() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS
    )


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if the hub endpoint (``HF_ENDPOINT``, default huggingface.co) accepts a TCP
    connection within ``timeout`` seconds, else why not. Offline, ``load_dataset`` would
    spend about 30 s in retries before failing; this answers in at most ``timeout``."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{host}:{port} unreachable ({e.strerror or type(e).__name__})"
    return None


def hub_disk_dir(data_dir: Path, hub_name: str) -> Path:
    return data_dir / "hub" / hub_name


def load_hub(data_dir: Path, hub_name: str, allow_download: bool):
    """A ``datasets.DatasetDict`` from ``<data_dir>/hub/<name>`` (save_to_disk) or the hub;
    (None, reason) when neither works (offline, no cache, datasets missing). The hub is
    tried only when its endpoint answers, or in offline mode (``HF_HUB_OFFLINE=1`` or
    ``HF_DATASETS_OFFLINE=1``: the local Hugging Face cache, no network)."""
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
    if not _offline_mode():  # offline mode: load_dataset reads the local cache only, at once
        why = hub_reachable()
        if why is not None:
            return None, (
                f"{why}, not tried; to use a cached copy of {hub_name} set HF_HUB_OFFLINE=1"
            )
    try:
        return datasets.load_dataset(hub_name), f"hub {hub_name}"
    except Exception as e:  # noqa: BLE001 - offline hubs raise many types
        return None, f"datasets.load_dataset({hub_name!r}) failed: {type(e).__name__}"


def require_hub(task, hub_name: str, what: str, local: str):
    """``load_hub`` for a task (its ``data_dir`` and ``hub`` option) whose local files are
    absent: (DatasetDict, source), or a DataError naming every place looked: ``local`` (the
    files expected), the save_to_disk folder, and why the hub gave nothing."""
    dd, src = load_hub(task.data_dir, hub_name, task.hub)
    if dd is None:
        raise DataError(
            f"task={task.name}: no {what} under {task.data_dir}: expected {local} or "
            f"{hub_disk_dir(task.data_dir, hub_name)} (datasets save_to_disk); hub: {src}"
        )
    return dd, src
