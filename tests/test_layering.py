"""The architecture of STYLE.md, checked: `analytics` reads through `proxy`, never the reverse."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_the_proxy_app_never_imports_the_analytics_or_reports_apps():
    offenders = {
        str(path.relative_to(ROOT)): sorted(
            name
            for name in imported_modules(path)
            if name.split(".")[0] in {"analytics", "reports"}
        )
        for path in (ROOT / "proxy").rglob("*.py")
        if "tests" not in path.parts
    }

    assert {path: names for path, names in offenders.items() if names} == {}
