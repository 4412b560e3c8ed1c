"""The wheel installs one importable name, `rapport` (issue 10): `shared/` and `services/` at the
repository root go in as `rapport.shared` and `rapport.services`, with their data files, so Rapport
never clashes with another project's top-level `shared` or `services`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # a copy of the sources (links kept as links), so the build leaves nothing in the checkout
    source = out / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", ".rapport", "__pycache__", ".*_cache", ".hypothesis"))
    # build isolation fetches the setuptools pyproject.toml asks for, as `pip install .` does
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
                   check=True, cwd=out, timeout=300)
    (built,) = out.glob("rapport-*.whl")
    return built


def test_the_wheel_holds_rapport_and_nothing_beside_it(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"rapport"}
    for needed in ("rapport/shared/instruments/definitions/phq9.toml",
                   "rapport/shared/instruments/questionnaires/mii-pro-phq9.toml",
                   "rapport/services/alerts/rules/rules.toml",
                   "rapport/alembic.ini", "rapport/migrations/env.py", "rapport/services/ingest/app.py",
                   "rapport/shared/contracts/envelope.py",
                   # the dashboard's templates and vendored htmx (nothing loads from outside at run time)
                   "rapport/services/gateway/templates/base.html", "rapport/services/gateway/static/htmx.min.js",
                   "rapport/services/gateway/static/htmx.LICENSE", "rapport/services/gateway/static/rapport.css",
                   "rapport/services/gateway/static/rapport.js"):
        assert needed in names, f"{needed} missing from the wheel"
    assert any(n.startswith("rapport/migrations/versions/") and n.endswith(".py") for n in names)


def test_the_installed_wheel_imports_as_rapport_only(wheel: Path, tmp_path: Path) -> None:
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    probe = (
        "import importlib.util, rapport.shared.instruments, rapport.services.alerts.rules as rules\n"
        "from rapport.shared.instruments import load_registry\n"
        "where = rapport.shared.instruments.__file__\n"
        f"assert where.startswith({str(installed)!r}), where\n"
        "assert 'phq9' in load_registry()\n"
        "assert importlib.util.find_spec('shared') is None and importlib.util.find_spec('services') is None\n"
        "print('ok')\n"
    )
    # outside the checkout, with the extracted wheel ahead of the editable install on the path
    env = {**os.environ, "PYTHONPATH": str(installed)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_no_code_imports_the_folders_by_their_top_level_names() -> None:
    """`shared` and `services` only exist as rapport.shared and rapport.services once installed; a
    top-level import works from the checkout alone and loads a second copy of the module."""
    import re

    pattern = re.compile(r"^\s*(from|import)\s+(shared|services)\b|import_module\(f?[\"'](shared|services)\.", re.M)
    files = {path.resolve() for folder in ("shared", "services", "rapport", "tests", "deploy")
             for path in (ROOT / folder).rglob("*.py")}
    offenders = [str(path.relative_to(ROOT)) for path in sorted(files)
                 if pattern.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
