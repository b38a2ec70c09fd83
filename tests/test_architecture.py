"""The import graph of src/medgen follows DESIGN.md: layers, no cycles, small modules.

Read with `ast` only (nothing is imported). Lazy imports inside functions count; imports
under `if TYPE_CHECKING:` do not. A unit is a top-level package `medgen.<pkg>` or a plain
module such as `medgen/config.py`; `medgen` itself is the (empty) root `__init__`.
"""

from __future__ import annotations

import ast
from collections import deque
from functools import cache
from pathlib import Path

import pytest

# Imports point down (or sideways, where allowed below), never up.
LAYERS = {
    0: {"medgen", "config", "atomic_io", "runtime", "datasets"},  # foundation: config, I/O
    # metrics sits with the library, not with evaluation: DESIGN lists it next to training,
    # and autoencoder (perceptual loss, paired metrics) as well as evaluation use it.
    1: {"diffusion", "models", "training", "metrics"},  # core
    2: {"data", "autoencoder", "generation", "evaluation", "inpainting", "text2image"},  # domain
    # Kedro wiring (check_config resolves conf/ through the project settings and registry)
    3: {"pipelines", "pipeline_registry", "settings", "hooks", "__main__", "check_config"},
}
# In layers 0 and 3 units may import each other freely (cycles are still refused); in
# layers 1 and 2 only along these edges, (importer unit, imported module prefix): reason.
# So training and models import no other core package, and diffusion never imports training.
ALLOWED = {
    ("diffusion", "medgen.models"): "strategies and modes build their networks via models",
    ("metrics", "medgen.training"): "fidelity trains its segmenter with the one training job",
    **{
        (pkg, "medgen.data"): "data is the domain's shared input: labels, resize, cohort"
        for pkg in ("autoencoder", "generation", "evaluation", "inpainting", "text2image")
    },
    ("generation", "medgen.autoencoder"): "generation encodes and decodes with the trained "
    "autoencoders (loading, tiled decoding, channel selection, reconstruction figures)",
    ("evaluation", "medgen.generation.slices"): "reference slices chosen as for training",
    ("text2image", "medgen.autoencoder"): "a latent-space generator encodes and decodes with "
    "the autoencoder pipeline's 2D model",
    ("text2image", "medgen.generation.nifti"): "generated slices are written as NIfTI with the "
    "same mm affine as latent_diffusion's",
    ("inpainting", "medgen.autoencoder"): "inpainting trains and uses the library's 3D "
    "patch-volume autoencoder on t1n (no second autoencoder implementation)",
}
FREE_LAYERS = {0, 3}
MAX_LINES = 400

SRC = Path(__file__).resolve().parents[1] / "src"
LAYER_OF = {unit: layer for layer, units in LAYERS.items() for unit in units}


@cache
def modules() -> dict[str, Path]:
    """`medgen.a.b` -> src/medgen/a/b.py (a package is its `__init__.py`)."""
    names = {p: p.relative_to(SRC).with_suffix("").parts for p in (SRC / "medgen").rglob("*.py")}
    return {".".join(n[:-1] if n[-1] == "__init__" else n): p for p, n in sorted(names.items())}


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "medgen"


def known(name: str) -> str:
    """The longest prefix of `name` that is a module of medgen (`medgen.x.Class` -> `medgen.x`)."""
    while name not in modules() and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(node: ast.AST, module: str, is_pkg: bool):
    """Yield (line, imported medgen module) for every import at or below `node`."""
    children = ast.iter_child_nodes(node)
    test = getattr(node, "test", None)  # `if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`
    name = getattr(test, "id", None) or getattr(test, "attr", None)
    if isinstance(node, ast.If) and name == "TYPE_CHECKING":
        children = node.orelse  # typing-only imports are no dependency
    elif isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "medgen":
                yield node.lineno, known(alias.name)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: resolve against the importing package
            package = module.split(".")[: len(module.split(".")) - (not is_pkg)]
            head = ".".join(package[: len(package) - node.level + 1])
            base = f"{head}.{base}" if base else head
        if base.split(".")[0] == "medgen":
            for alias in node.names:  # `from medgen import generation` imports a module
                yield node.lineno, known(f"{base}.{alias.name}")
    for child in children:
        yield from imports_of(child, module, is_pkg)


@cache
def parsed(path: Path) -> tuple[str, ast.Module]:
    text = path.read_text(encoding="utf-8")
    return text, ast.parse(text, filename=str(path))


@cache
def edges() -> tuple[tuple[str, int, str], ...]:
    """(importer, line, imported) for every medgen-internal import, without self-imports."""
    found = set()
    for module, path in modules().items():
        for line, target in imports_of(parsed(path)[1], module, path.name == "__init__.py"):
            if target != module:
                found.add((module, line, target))
    return tuple(sorted(found))


def where(module: str, line: int) -> str:
    return f"{modules()[module].relative_to(SRC).as_posix()}:{line}"


def cycles(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """One shortest cycle through every edge that lies on a cycle (nodes, start repeated)."""
    found = set()
    for start, targets in graph.items():
        for first in targets:
            paths, queue = {first: [start, first]}, deque([first])
            while queue and start not in paths:
                node = queue.popleft()
                for nxt in graph.get(node, {}):
                    if nxt not in paths:
                        paths[nxt] = [*paths[node], nxt]
                        queue.append(nxt)
            if start in paths:
                ring = paths[start][:-1]
                i = ring.index(min(ring))
                found.add(tuple(ring[i:] + ring[:i]))
    return [[*ring, ring[0]] for ring in sorted(found)]


def graph_of(key) -> dict[str, dict[str, list[str]]]:
    """node -> {node: locations of the imports making that edge}, nodes given by `key`."""
    graph: dict[str, dict[str, list[str]]] = {}
    for src, line, dst in edges():
        if key(src) != key(dst):
            graph.setdefault(key(src), {}).setdefault(key(dst), []).append(where(src, line))
    return graph


def chain(ring: list[str], graph: dict[str, dict[str, list[str]]]) -> str:
    hops = [f"{a} ({', '.join(graph[a][b])})" for a, b in zip(ring, ring[1:], strict=False)]
    return " -> ".join([*hops, ring[-1]])


def test_every_unit_has_a_layer():
    missing = sorted({unit(m) for m in modules()} - LAYER_OF.keys())
    assert not missing, f"add these to LAYERS in {__file__}: {missing}"


def test_no_import_cycles_between_units_or_modules():
    units, mods = graph_of(unit), graph_of(lambda m: m)
    found = [f"units:   {chain(r, units)}" for r in cycles(units)]
    found += [f"modules: {chain(r, mods)}" for r in cycles(mods)]
    if found:
        pytest.fail("import cycles:\n" + "\n".join(found), pytrace=False)


def test_imports_follow_the_layers():
    bad = []
    for src, line, dst in edges():
        a, b = unit(src), unit(dst)
        la, lb = LAYER_OF.get(a), LAYER_OF.get(b)
        if a == b or la is None or lb is None:
            continue
        sideways = la == lb and la not in FREE_LAYERS
        if sideways and any(a == s and f"{dst}.".startswith(f"{p}.") for s, p in ALLOWED):
            continue
        if la < lb or sideways:
            why = f", {a} -> {b} is not in ALLOWED" if sideways else ""
            bad.append(f"{where(src, line)} imports {dst} (layer {la} -> layer {lb}{why})")
    if bad:
        pytest.fail(f"{len(bad)} imports break the layers:\n" + "\n".join(bad), pytrace=False)


def test_allowed_edges_are_one_way():
    graph = {}
    for (src, prefix), reason in ALLOWED.items():
        assert reason and LAYER_OF[src] == LAYER_OF[unit(prefix)], (src, prefix)
        graph.setdefault(src, {})[unit(prefix)] = ["ALLOWED"]
    assert not cycles(graph), cycles(graph)


def test_no_module_is_oversized_without_a_reason():
    bad = []
    for path in modules().values():
        text, tree = parsed(path)
        lines, doc = len(text.splitlines()), ast.get_docstring(tree) or ""
        if lines > MAX_LINES and not any(s.lstrip().startswith("Size:") for s in doc.splitlines()):
            bad.append(f"{path.relative_to(SRC).as_posix()}: {lines} lines")
    if bad:
        head = f"over {MAX_LINES} lines without a 'Size:' line in the module docstring:\n"
        pytest.fail(head + "\n".join(bad), pytrace=False)
