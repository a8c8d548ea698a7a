"""spikeforge.runtime.omp_wait: the OpenMP pools' waiting is chosen by the library, whatever the import order.

The effect is checked where it acts: after a torch op, torch's idle OpenMP worker burns CPU time while it spins
(~5 ms by libgomp's default) and none when the pools are set to sleep -- measured in a process that imports torch
before spikeforge, with no environment variable."""

import json
import os
import subprocess
import sys

import pytest

from spikeforge.runtime import ENTER_SLEEP_CORES, decide, omp_wait

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="libgomp and /proc are Linux-only")

PRELUDE = r"""
import json, os, statistics, subprocess, sys, time
import torch                                   # first, as a user's script does
from spikeforge.functional import lif
from spikeforge.runtime import omp_wait, omp_wait_state

lif(torch.rand(4, 2, 70000), backend="cpu")   # the first fused kernel starts numba's pool and the policy

def spin_ms():
    # CPU time the process burns while its main thread sleeps right after a parallel torch op: the spinning workers
    x, burnt = torch.randn(1 << 20), []
    for _ in range(9):
        x.add_(1.0)
        c0 = time.process_time(); time.sleep(0.03); burnt.append((time.process_time() - c0) * 1e3)
    return statistics.median(burnt)
"""


def _run(code: str, **env) -> dict:
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", PRELUDE + code], env=full, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sleep_and_spin_take_effect_with_torch_imported_first():
    got = _run("""
first = omp_wait_state()
omp_wait("sleep"); asleep = spin_ms()
omp_wait("spin"); spinning = spin_ms()
omp_wait("sleep"); asleep2 = spin_ms()
print(json.dumps({"first": first, "asleep": max(asleep, asleep2), "spinning": spinning}))
""")
    first = got["first"]
    assert first["policy"] == "auto" and first["waiting"] in ("spin", "sleep")
    assert any("torch" in p for p in first["runtimes"]) and len(first["runtimes"]) == 2  # torch's and numba's
    assert got["asleep"] < 1.0, got
    # spinning workers burn ~5 ms per idle 30 ms on a quiet machine; less when another process takes a core
    assert got["spinning"] > max(0.4, 4 * got["asleep"]), got


def test_auto_sleeps_while_another_process_is_busy():
    got = _run("""
busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
try:
    deadline = time.monotonic() + 20
    while omp_wait_state()["waiting"] != "sleep" and time.monotonic() < deadline:
        time.sleep(0.1)
    state = omp_wait_state()
    burnt = spin_ms()
finally:
    busy.kill()
print(json.dumps({"state": state, "burnt": burnt}))
""")
    assert got["state"]["policy"] == "auto" and got["state"]["waiting"] == "sleep", got
    assert got["state"]["others"] > ENTER_SLEEP_CORES
    assert got["burnt"] < 1.0, got


def test_environment_variable_is_honoured():
    got = _run("print(json.dumps(omp_wait_state()))", OMP_WAIT_POLICY="PASSIVE")
    assert got["policy"] == "environment" and got["waiting"] is None and "OMP_WAIT_POLICY" in got["reason"]


def test_decide_sleeps_on_contention_and_spins_again_after_two_calm_samples():
    free = 0
    assert decide("spin", 0.05, free, calm_before=True) == "spin"
    assert decide("spin", 1.0, free, calm_before=True) == "sleep"  # one busy process on a full machine
    assert decide("sleep", 0.05, free, calm_before=False) == "sleep"  # one calm sample is not enough
    assert decide("sleep", 0.05, free, calm_before=True) == "spin"
    assert decide("sleep", 0.2, free, calm_before=True) == "sleep"  # hysteresis band
    assert decide("spin", 0.9, 1, calm_before=True) == "spin"  # a free core absorbs it


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="policy='passive'.*auto"):
        omp_wait("passive")
