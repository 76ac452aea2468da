"""scripts/bench_data.py's provenance: the JSON names the command that makes it again, as
typed, and the machine's processor by its model (surnn.provenance), beside the numbers
(the timings themselves are stubbed here: they measure the machine, not the code)."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from surnn.provenance import cpu_model
from tests.fixtures import ROOT, load_script

bench = load_script("bench_data")


def test_the_json_records_the_command_and_the_processor(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "bench_generators", lambda d, quick: {"stub": quick})
    out = tmp_path / "d a t a.json"
    argv = ["--out", str(out), "--quick", "--skip-loaders"]
    assert bench.main(argv) == 0
    res = json.loads(out.read_text())
    words = shlex.split(res["command"])
    assert words[0] == "python" and words[2:] == argv
    assert Path(words[1]).resolve() == ROOT / "scripts" / "bench_data.py"
    assert res["machine"]["processor"] == cpu_model() != ""
    assert res["generators"] == {"stub": True} and "loaders" not in res
    # run from its command line: the command line as typed
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["scripts/bench_data.py", *argv])
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert bench.main() == 0
    assert json.loads(out.read_text())["command"] == shlex.join(
        ["python", "scripts/bench_data.py", *argv]
    )
