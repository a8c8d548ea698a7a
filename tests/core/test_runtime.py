"""spikeforge.runtime.keep_freed_memory: applied on glibc Linux, switched off by its environment variable."""

import subprocess
import sys

import pytest

CODE = "from spikeforge.runtime import keep_freed_memory as k; print(k(), k())"


def _run(env_value):
    import os

    env = dict(os.environ)
    env.pop("SPIKEFORGE_KEEP_FREED_MEMORY", None)
    if env_value is not None:
        env["SPIKEFORGE_KEEP_FREED_MEMORY"] = env_value
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                          check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_freed_memory_applies_once_and_can_be_switched_off():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert _run(None) == ["True", "True"]
    assert _run("0") == ["False", "False"]
