"""`rapport demo --serve`: a newcomer sees the dashboard within a minute of installing. The demo
keeps its stack running after the cohort is in and prints a login link for the therapist with the
most open alerts and one for a lead; the therapist's link opens their worklist with those alerts."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

pytestmark = [pytest.mark.nats, pytest.mark.e2e]


def test_rapport_demo_serve_keeps_the_stack_up_and_its_therapist_link_opens_their_worklist() -> None:
    import os
    import re
    import signal

    env = {k: v for k, v in os.environ.items() if k not in ("RAPPORT_BROKER_URL", "RAPPORT_DATABASE_URL")}
    process = subprocess.Popen([sys.executable, "-m", "rapport.cli", "demo", "--serve", "--clients", "8",
                                "--sessions", "6"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env)
    try:
        assert process.stdout is not None
        lines: list[str] = []
        for line in process.stdout:
            lines.append(line)
            if "clinical lead" in line:
                break
        else:
            pytest.fail(f"rapport demo --serve exited with {process.wait()}: {''.join(lines)}")
        said = "".join(lines)
        therapist = re.search(r"therapist (\S+) \((\d+) open alerts\)\s+(\S+)", said)
        assert therapist, said
        with httpx.Client(timeout=30, follow_redirects=True) as http:
            worklist = http.get(therapist.group(3))
            assert worklist.status_code == 200
            for _ in range(50):  # the gateway's read model follows the alert events a moment behind
                if worklist.text.count('class="alert"') == int(therapist.group(2)):
                    break
                time.sleep(0.2)
                worklist = http.get(worklist.url.copy_with(path="/"))
            assert worklist.text.count('class="alert"') == int(therapist.group(2))
        lead = re.search(r"clinical lead\s+(\S+)", said)
        assert lead and httpx.get(lead.group(1), timeout=30, follow_redirects=False).status_code == 303
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(60)

