"""The shape of the engine, checked: core/ never imports streamlit, imports only flow down the layers, and every
stage has its module, config section, run folder and artefact prefix under one name."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from core.artifacts import REGISTRY
from core.config import PipelineConfig, section_names
from core.pipeline import MODES

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "core"

# Lower layers never import higher ones (an import from a layer to a higher one is a back-edge).
LAYERS: list[set[str]] = [
    {"core.geometry", "core.photos", "core.progress", "core.config", "core.artifacts", "core.segmentation",
     "core.gltf_validator", "core.settings", "core.known_distance"},
    {"core.manifest", "core.scene"},
    {"core.advice"},
    {"core.stages"},
    {"core.pipeline"},
    {"core.report", "core.jobs"},
    {"core.cli", "core.batch"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Modules a file imports (at any depth: lazy imports inside functions count too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _layer(module: str) -> int | None:
    for index, layer in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in layer):
            return index
    return None


def _core_files() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if p != CORE / "__init__.py")


def test_core_never_imports_streamlit() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in _core_files()
                 if any(m == "streamlit" or m.startswith("streamlit.") for m in _imports(p))]
    assert not offenders, offenders


def test_imports_only_flow_down_the_layers() -> None:
    back_edges = []
    for path in _core_files():
        module = _module_name(path)
        own = _layer(module)
        assert own is not None, f"{module} is in no layer of this test: place it"
        for imported in _imports(path):
            if not imported.startswith("core.") or (target := _layer(imported)) is None:
                continue
            # A stage may use another stage's result types; the main guard of core/pipeline.py starts the CLI.
            if target > own and not (module == "core.pipeline" and imported.startswith("core.cli")):
                back_edges.append(f"{module} -> {imported}")
    assert not back_edges, back_edges


def test_the_engine_never_imports_benchmarks_or_tests() -> None:
    offenders = [f"{_module_name(p)} -> {m}" for p in _core_files() for m in _imports(p)
                 if m.split(".")[0] in ("benchmarks", "tests", "pages")]
    assert not offenders, offenders


@pytest.mark.parametrize("mode", sorted(MODES))
def test_one_name_per_stage(mode: str) -> None:
    """Stage name = module in core/stages = config section = run folder = artefact prefix."""
    sections = set(section_names())
    for stage in MODES[mode]:
        module = CORE / "stages" / stage.name
        assert module.with_suffix(".py").is_file() or (module / "__init__.py").is_file(), stage.name
        assert stage.name in sections, f"no config section for stage {stage.name}"
    for artifact in REGISTRY.values():
        assert artifact.stage in sections, artifact.key
        assert artifact.run_path.split("/")[0] == artifact.stage


def test_config_sections_are_frozen() -> None:
    config = PipelineConfig()
    for name in section_names():
        section = getattr(config, name)
        assert dataclasses.is_dataclass(section) and type(section).__dataclass_params__.frozen, name
