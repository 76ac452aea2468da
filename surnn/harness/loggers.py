"""Where metrics go: ``metrics.jsonl`` in the run folder always, wandb when enabled.

wandb runs offline by default (no account, no network); ``logger=none`` turns it off and
``logger=wandb logger.mode=online`` syncs live.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class JsonlLog:
    """Append-only metrics log. On resume, lines written after the checkpoint's step by
    the interrupted process are dropped so the file reads as one uninterrupted run."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if rec.get("step", 0) <= resume_step:
                    keep.append(line)
            self.path.write_text("".join(k + "\n" for k in keep))
        elif resume_step is None and self.path.exists():
            self.path.unlink()

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")


class WandbLog:
    def __init__(self, cfg: dict[str, Any], run_dir: Path, run_id: str, config: dict[str, Any]):
        import os

        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        mode = cfg.get("mode", "offline")
        self.mode, self.run_dir = mode, Path(run_dir)
        self.run = wandb.init(
            project=cfg.get("project", "surnn-lra"),
            entity=cfg.get("entity"),
            group=cfg.get("group"),
            tags=list(cfg.get("tags") or []),
            name=run_id,
            id=run_id.replace("/", "-"),
            resume="allow",
            dir=str(run_dir),
            mode=mode,
            config=config,
        )

    def log(self, record: dict[str, Any]) -> None:
        step = record.get("step")
        self.run.log({k: _clean(v) for k, v in record.items() if k != "step"}, step=step)

    def summary(self, results: dict[str, Any]) -> None:
        for k, v in results.items():
            if isinstance(v, int | float | str):
                self.run.summary[k] = v

    def sync_dir(self) -> Path:
        """The folder ``wandb sync`` uploads (``<run_dir>/wandb/offline-run-...``)."""
        try:
            return Path(self.run.settings.sync_dir)
        except (AttributeError, TypeError):
            found = sorted((self.run_dir / "wandb").glob("offline-run-*"))
            return found[-1] if found else self.run_dir / "wandb"

    def close(self) -> None:
        where = self.sync_dir() if self.mode == "offline" else None
        self.run.finish()
        if where is not None:
            log.info(
                "wandb ran offline: nothing was uploaded. To upload this run: wandb sync %s "
                "(logger.mode=online syncs live; logger=none turns wandb off)",
                where,
            )


class Loggers:
    """Fan-out to the JSONL log and, optionally, wandb (rank 0 only)."""

    def __init__(self, sinks: list):
        self.sinks = sinks

    def log(self, record: dict[str, Any]) -> None:
        for s in self.sinks:
            s.log(record)

    def summary(self, results: dict[str, Any]) -> None:
        for s in self.sinks:
            if hasattr(s, "summary"):
                s.summary(results)

    def close(self) -> None:
        for s in self.sinks:
            if hasattr(s, "close"):
                try:
                    s.close()
                except Exception as e:  # noqa: BLE001 - never lose results over a logger
                    log.warning("closing logger %s failed: %s", type(s).__name__, e)
