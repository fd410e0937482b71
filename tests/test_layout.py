"""The package's layering (ARCHITECTURE.md): imports run one way, from the surfaces down.

    cli  ->  serve, batch  ->  training, evaluation, build  ->  predictor (+ settings)  ->  modeling,
    data, synthetic  ->  ops, io  ->  errors, limits, validation, model_source, crop_options

Read from the source with ``ast`` (nothing is imported), including imports inside functions.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "clipcrop"
BASE = {"errors", "limits", "validation", "model_source", "crop_options", "__init__"}
LOW = BASE | {"ops", "io"}
#: what each part may import besides itself
ALLOWED = {
    "errors": set(),
    "limits": {"errors"},
    "validation": {"errors", "limits"},
    "model_source": {"errors", "limits"},
    "crop_options": {"errors", "limits", "validation", "ops"},  # torch-free: ops.aspect only
    "ops": {"errors"},
    "io": BASE | {"ops"},
    "modeling": LOW,
    "data": LOW,
    "synthetic": LOW | {"modeling"},
    "predictor": LOW | {"modeling", "settings"},
    "build": LOW | {"modeling", "training"},
    # torch-free loading settings: the predictor takes them; only ``load()`` reaches up to it (lazily)
    "settings": LOW | {"predictor", "modeling"},
    "evaluation": LOW | {"modeling", "data", "predictor", "settings"},
    "training": LOW | {"modeling", "data", "predictor", "evaluation", "build", "settings"},
    "serve": LOW | {"modeling", "predictor", "settings"},
    "batch": LOW | {"modeling", "predictor", "settings"},
}


def _part(module: str) -> str:
    """``clipcrop.modeling.backbone`` -> ``modeling``; ``clipcrop`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports() -> dict[str, set[str]]:
    """module -> the clipcrop modules it imports (relative imports resolved)."""
    out: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts)
        is_init = path.name == "__init__.py"
        if is_init:
            module = module[: -len(".__init__")]
        package = module if is_init else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
                out[module].update(names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("clipcrop"):
                out[module].add(node.module)
            elif isinstance(node, ast.Import):
                out[module].update(a.name for a in node.names if a.name.startswith("clipcrop"))
    return out


def test_the_reader_sees_the_imports():
    imports = _imports()
    assert "clipcrop.modeling.backbone" in imports["clipcrop.predictor"]
    assert "clipcrop.ops.box_ops" in imports["clipcrop.modeling.backbone"]


def test_nothing_outside_cli_imports_cli():
    offenders = sorted(
        (m, t)
        for m, targets in _imports().items()
        for t in targets
        if _part(t) == "cli" and _part(m) != "cli" and t != "clipcrop.__version__"
    )
    assert offenders == []


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_imports_run_one_way(part):
    offenders = sorted(
        (m, t)
        for m, targets in _imports().items()
        if _part(m) == part
        for t in targets
        if _part(t) not in ALLOWED[part] | {part, "__version__"} and not t.startswith("clipcrop.__version__")
    )
    assert offenders == [], f"{part} may import only {sorted(ALLOWED[part])}"
