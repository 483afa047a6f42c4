"""Every ``definitions/*.yaml`` equals its builder twin in ``examples/`` and round-trips through YAML."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from statemachine.definition import loader, models

ROOT = Path(__file__).resolve().parents[2]
DEFINITIONS = sorted((ROOT / "definitions").glob("*.yaml"))


def twin_module(yaml_file: Path) -> ModuleType:
    """``definitions/order-processing.yaml`` -> ``examples/order_processing.py``, loaded by path."""
    name = yaml_file.stem.replace("-", "_")
    path = ROOT / "examples" / f"{name}.py"
    assert path.is_file(), f"{yaml_file.name} has no builder twin at examples/{path.name}"
    spec = importlib.util.spec_from_file_location(f"examples_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_definitions_folder_is_not_empty() -> None:
    assert len(DEFINITIONS) >= 7


@pytest.mark.parametrize("yaml_file", DEFINITIONS, ids=lambda p: p.stem)
def test_yaml_and_builder_twin_are_the_same_definition(yaml_file: Path) -> None:
    from_yaml = loader.load_yaml(yaml_file)
    built = twin_module(yaml_file).build()
    assert isinstance(built, models.WorkflowDefinition)
    assert built.to_dict() == from_yaml.to_dict()
    assert built.hash == from_yaml.hash


@pytest.mark.parametrize("yaml_file", DEFINITIONS, ids=lambda p: p.stem)
def test_yaml_round_trips(yaml_file: Path) -> None:
    definition = loader.load_yaml(yaml_file)
    again = loader.load_yaml_text(definition.to_yaml())
    assert again.to_dict() == definition.to_dict()
    assert again.hash == definition.hash


@pytest.mark.parametrize("yaml_file", DEFINITIONS, ids=lambda p: p.stem)
def test_diagrams_draw_every_step(yaml_file: Path) -> None:
    definition = loader.load_yaml(yaml_file)
    mermaid = definition.to_mermaid()
    dot = definition.to_dot()
    assert mermaid.startswith("flowchart")
    assert dot.startswith("digraph")
    for _, step in definition.walk():
        assert f'"{step.name}' in mermaid, step.name
        assert f'label="{step.name}"' in dot, step.name


def test_twins_import_without_side_effects(capsys: pytest.CaptureFixture[str]) -> None:
    for yaml_file in DEFINITIONS:
        twin_module(yaml_file)
    assert capsys.readouterr().out == ""
