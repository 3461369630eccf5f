"""tools/gpu_check.py on the CPU at tiny sizes: every stage runs in its own subprocess and writes its result, a
stage that fails or overruns its cap is recorded and the next one runs anyway, and the summary is written.  The
figures of a tiny CPU check are no figures; what this proves is that the check runs before a GPU is spent on it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ENV, ROOT
from tools import gpu_check

FAKE_BENCH = """import sys
args = dict(a[2:].split("=", 1) for a in sys.argv[1:])
assert args["real_data"] == "False" and args["device"] == "cpu", args
print("19/20 loss: 10.9")
print("time per iteration: 123.4000ms, MFU: 40.00%")
"""


def fake_nanogpt(tmp_path: Path, script: str = FAKE_BENCH) -> Path:
    """A directory standing in for a nanoGPT checkout: its bench.py says what nanoGPT's says."""
    repo = tmp_path / "nanoGPT"
    repo.mkdir()
    (repo / "bench.py").write_text(script)
    return repo


@pytest.mark.slow
def test_every_stage_runs_on_the_cpu_in_tiny_mode(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run([sys.executable, "-m", "tools.gpu_check", "--gpu_check.tiny=true", "--gpu_check.device=cpu",
                           f"--gpu_check.out={out}", f"--gpu_check.nanogpt={fake_nanogpt(tmp_path)}"],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "summary.json").read_text())
    stages = {r["stage"]: r for r in report["stages"]}
    assert list(stages) == list(gpu_check.STAGES)
    for name, r in stages.items():
        assert r["status"] == "ok" or (name == "hellaswag" and r["status"] == "skipped: eval.task unavailable"), r
        assert (out / "stages" / f"{name}.log").is_file() and r["seconds"] <= r["cap"]
    assert stages["pytest"]["counts"].get("failed", 0) == 0
    speed = stages["speed"]["figures"]
    assert set(speed) == {"bf16 compiled, padded head", "bf16 compiled, unpadded head"}
    assert all(f["tokens_per_s"] > 0 and f["mfu"] > 0 for f in speed.values())
    assert set(stages["speed_eager"]["figures"]) == {"bf16 eager", "fp32 (TF32 matmuls) eager"}  # fp16 needs CUDA
    assert stages["nanogpt"]["nanogpt_ms_per_step"] == 123.4 and stages["nanogpt"]["nanogpt_over_ours"] > 0
    assert stages["resume"]["exact"] and 0 < stages["resume"]["killed_at"] < stages["resume"]["steps"]
    assert stages["sample"]["runs"][0]["recompute"]["tokens_per_s"] > 0
    table = (out / "summary.md").read_text()
    assert table.count("\n| ") == len(gpu_check.STAGES) + 2 and "tiny" in table  # a header, its rule, a row a stage


@pytest.mark.parametrize("script, status", [
    ("raise SystemExit('no GPU here')\n", "failed: nanoGPT's bench.py gave no time per iteration"),
    ("import time\ntime.sleep(600)\n", "timeout:"),  # never done: stopped by its cap or its own share of it
], ids=["fails", "overruns"])
def test_a_stage_that_fails_or_overruns_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch, script, status):
    monkeypatch.setitem(gpu_check.CAPS, "nanogpt", (2, 2))
    cfg = gpu_check.GpuCheckConfig(out=str(tmp_path / "check"), device="cpu", tiny=True, stages="hellaswag,nanogpt",
                                   nanogpt=str(fake_nanogpt(tmp_path, script)))
    report = gpu_check.check(cfg, [])
    nanogpt, hellaswag = report["stages"]  # in the module's order, whatever the setting's
    assert nanogpt["status"].startswith(status) and nanogpt["log_tail"] is not None
    assert hellaswag["status"].startswith("skipped: no model")  # it ran: the resume stage's model is not there
    saved = json.loads((tmp_path / "check" / "summary.json").read_text())
    assert [r["status"] for r in saved["stages"]] == [r["status"] for r in report["stages"]]


def test_a_bad_stage_name_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tools.gpu_check", "--gpu_check.stages=env,warp",
                           f"--gpu_check.out={tmp_path}"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "gpu_check.stages" in done.stderr
