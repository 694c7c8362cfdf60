"""Imports point down only: commands -> run function and Recommender -> library; evaluation/ stays below.

The graph counts every import statement of the package, inside functions too (a deferred import is
still a dependency, and the one that hid the old circle compare -> quick_start -> compare).
"""
import ast
from pathlib import Path

import recbole_genair

PACKAGE = Path(recbole_genair.__file__).resolve().parent
# Entry points that only hand over to the command layer, as run_recbole_genair.py does.
ENTRY_POINTS = {"recbole_genair.recommend", "recbole_genair.serve", "recbole_genair.add_items", "recbole_genair.tables"}


def module_names(package_dir):
    """{dotted module name: file} of every module under `package_dir`."""
    names = {}
    for path in sorted(Path(package_dir).rglob("*.py")):
        parts = list(path.relative_to(Path(package_dir).parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(package_dir):
    """{module: the package's modules it imports}, from `import`, `from ... import` and `import_module("...")`."""
    modules = module_names(package_dir)
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
            elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
                  and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                targets.add(node.args[0].value)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def circles(graph):
    """Groups of modules that import each other (strongly connected components of two or more)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def is_command_layer(module):
    return module == "recbole_genair.commands" or module.startswith("recbole_genair.commands.") or module in ENTRY_POINTS


def test_the_graph_sees_deferred_imports():
    graph = import_graph(PACKAGE)
    assert "recbole_genair.trainer" in graph["recbole_genair.utils"]  # imported inside get_trainer
    assert "recbole_genair.quick_start" in graph["recbole_genair.commands.compare"]


def test_no_module_imports_in_a_circle():
    assert circles(import_graph(PACKAGE)) == []


def test_evaluation_never_reaches_the_run_function_or_the_commands():
    graph = import_graph(PACKAGE)
    upper = {"recbole_genair.quick_start", "recbole_genair.recommender"}
    for module in graph:
        if module.startswith("recbole_genair.evaluation"):
            climbs = sorted(m for m in reachable(graph, module) if m in upper or is_command_layer(m))
            assert climbs == [], f"{module} imports {climbs}"


def test_only_the_command_layer_imports_the_command_layer():
    graph = import_graph(PACKAGE)
    for module, imported in graph.items():
        if not is_command_layer(module):
            assert not [m for m in imported if is_command_layer(m)], module
