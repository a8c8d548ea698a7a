"""build_model lives in spikeforge.models.build: the report and the CLIs build a run's model without importing the
training loop (training.report <-> training.trainer was an import circle)."""

import ast
import inspect

import spikeforge.training.report as report


def _imported_modules(mod) -> set:
    """Every module named by an import statement anywhere in ``mod`` (including imports inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(inspect.getsource(mod))):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_report_does_not_import_the_trainer():
    imported = _imported_modules(report)
    assert "..models.build" in imported
    assert not {m for m in imported if m.endswith("trainer")}, imported


def test_trainer_uses_the_one_build_model():
    from spikeforge.models.build import build_model
    from spikeforge.training import build_model as exported
    from spikeforge.training import trainer

    assert trainer.build_model is build_model is exported
