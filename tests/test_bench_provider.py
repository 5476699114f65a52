"""The benchmark's provider speaks the Twilio wire notify sends on, and notes each arrival."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from benchmarks.provider import ACCOUNT, TOKEN

PATH = f"/2010-04-01/Accounts/{ACCOUNT}/Messages.json"


def test_accepts_a_message_and_notes_its_arrival(tmp_path: Path) -> None:
    out = tmp_path / "arrivals.tsv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.provider", "--out", str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        form = {"To": "+6281234567890", "From": "PERLINSOS", "Body": "Halo"}
        with httpx.Client(base_url=url, auth=(ACCOUNT, TOKEN)) as client:
            accepted = client.post(PATH, data=form)
            refused = client.post(PATH, data={**form, "To": "0812"})
        anonymous = httpx.post(url + PATH, data=form)
    finally:
        proc.terminate()
        proc.wait(10)
    assert accepted.status_code == 201
    body = accepted.json()
    assert body["sid"].startswith("SM") and body["to"] == "+6281234567890"
    assert body["num_segments"] == "1" and body["status"] == "queued"
    assert refused.status_code == 400 and refused.json()["code"] == 21211
    assert anonymous.status_code == 401
    lines = out.read_text().splitlines()
    assert len(lines) == 1 and lines[0].split("\t")[0] == "+6281234567890"
