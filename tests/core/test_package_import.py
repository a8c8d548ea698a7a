"""``import spikeforge`` is light (no torch, numba or subpackage loaded) and reaches every subpackage lazily."""

import json
import pkgutil
import subprocess
import sys

import spikeforge

PUBLIC = sorted(m.name for m in pkgutil.iter_modules(spikeforge.__path__) if not m.name.startswith("_"))


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_spikeforge_loads_no_subpackage_nor_torch_nor_numba():
    loaded = _run("import sys, json, spikeforge; print(json.dumps(sorted(sys.modules)))")
    assert [m for m in loaded if m.startswith("spikeforge.")] == []
    assert "torch" not in loaded and "numba" not in loaded


def test_subpackages_are_reachable_from_the_top_level_import():
    code = ("import json, spikeforge as sf, torch; lif = sf.neurons.LIF; import spikeforge.neurons as n;"
            f"mods = [getattr(sf, name).__name__ for name in {PUBLIC!r}];"
            "print(json.dumps({'lif': lif is n.LIF, 'mods': mods, 'dir': sorted(dir(sf)),"
            " 'cuda': torch.cuda.is_initialized()}))")
    got = _run(code)
    assert got["lif"] and got["mods"] == [f"spikeforge.{name}" for name in PUBLIC]
    assert set(PUBLIC) <= set(got["dir"]) and not got["cuda"]
    assert {"neurons", "models", "functional", "kernels", "training", "data"} <= set(PUBLIC)


def test_unknown_attribute_is_a_plain_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        spikeforge.nonexistent  # noqa: B018
    assert not hasattr(spikeforge, "__main__")
