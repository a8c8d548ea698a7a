"""The on-disk cache of generated kernel modules: a file is imported only if its bytes are what its name's hash
says (a tampered file is rewritten, never run), and stale modules are pruned."""

import hashlib
import json
import os
import subprocess
import sys
import time

from spikeforge.kernels import runtime

TAMPER = "\nimport builtins; builtins.SPIKEFORGE_TAMPERED = True\nraise RuntimeError('tampered module ran')\n"


def test_tampered_module_is_rewritten_and_never_run(tmp_path):
    text = "X = 41 + 1\n"
    mod = runtime.load_generated(tmp_path, "t", text, "sf_test_cache_a")
    (path,) = tmp_path.glob("t_*.py")
    assert mod.X == 42 and path.name == f"t_{hashlib.sha1(text.encode()).hexdigest()[:16]}.py"
    path.write_text(path.read_text() + TAMPER)
    sys.modules.pop("sf_test_cache_a_" + path.stem)
    mod = runtime.load_generated(tmp_path, "t", text, "sf_test_cache_a")
    import builtins

    assert not hasattr(builtins, "SPIKEFORGE_TAMPERED")
    assert mod.X == 42 and path.read_text() == text  # executed from the generated source; the file restored


def test_prune_deletes_unused_mismatched_and_leftover_files(tmp_path):
    def module(stem, text):
        p = tmp_path / f"{stem}_{hashlib.sha1(text.encode()).hexdigest()[:16]}.py"
        p.write_text(text)
        cache = tmp_path / "__pycache__" / f"{p.stem}.fn-1.py311.nbi"
        cache.parent.mkdir(exist_ok=True)
        cache.write_text("")
        return p, cache

    fresh, fresh_cache = module("a", "A = 1\n")
    old, old_cache = module("a", "A = 2\n")
    bad, _ = module("b", "B = 1\n")
    bad.write_text("B = 2\n")
    tmp_old, tmp_new = tmp_path / "x.py.1.tmp", tmp_path / "y.py.1.tmp"
    tmp_old.write_text("")
    tmp_new.write_text("")
    now = time.time()
    long_ago = now - runtime.PRUNE_AGE_S - 10
    os.utime(old, (long_ago, long_ago))
    os.utime(tmp_old, (now - runtime.TMP_AGE_S - 10,) * 2)
    gone = runtime.prune(tmp_path, now=now)
    assert sorted(gone) == sorted([old, bad, tmp_old])
    assert fresh.exists() and fresh_cache.exists() and tmp_new.exists()
    assert not old_cache.exists()


CHILD = r"""
import builtins, json, torch
from spikeforge.kernels.pool import max_pool2d_cl
x = (torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8) % 11).to(memory_format=torch.channels_last)
ok = torch.equal(max_pool2d_cl(x, 2, 2, 0), torch.nn.functional.max_pool2d(x, 2, 2, 0))
print(json.dumps({"tampered": hasattr(builtins, "SPIKEFORGE_TAMPERED"), "kernel_ok": ok}))
"""


def test_tampered_cached_kernel_does_not_run_and_the_kernel_still_works(tmp_path):
    env = {**os.environ, "SPIKEFORGE_CACHE_DIR": str(tmp_path)}

    def run():
        out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    # the pooling kernel is the quickest to compile; every generated module (cpu.py, fused.py) loads the same way
    assert run() == {"tampered": False, "kernel_ok": True}
    modules = sorted(tmp_path.glob("*/*_*.py"))
    assert [p.parent.name for p in modules] == ["pool"]
    originals = {p: p.read_bytes() for p in modules}
    for p in modules:
        with open(p, "a") as f:
            f.write(TAMPER)
    assert run() == {"tampered": False, "kernel_ok": True}
    assert {p: p.read_bytes() for p in modules} == originals  # rewritten to what their names' hashes say
