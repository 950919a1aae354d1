"""The package a user installs: the wheel holds the library, the dashboard and the shipped checkpoints, and works
from a fresh virtual environment, outside any checkout."""
import email
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from setuptools import find_packages

from tests import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_package_list_is_what_exists():
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert listed == set(find_packages(str(ROOT), include=["wfexplain*"])) | {"wfexplain_checkpoints"}


def test_dependencies_are_ranges_and_the_lock_pins_each_within_them():
    from packaging.requirements import Requirement

    lock = {line.split("==")[0].lower(): line.split("==")[1].strip() for line in (ROOT / "requirements.txt").read_text()
            .splitlines() if "==" in line}
    optional = [d for deps in PYPROJECT["project"]["optional-dependencies"].values() for d in deps]
    for spec in PYPROJECT["project"]["dependencies"] + optional:
        req = Requirement(spec)
        assert "==" not in spec and req.specifier, f"{spec}: a range, not a pin"
        pinned = lock.get(req.name.lower())
        if pinned is not None:
            assert req.specifier.contains(pinned), f"the lock's {req.name} {pinned} is outside {spec}"
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    had_build = (ROOT / "build").exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(out)], check=True, capture_output=True, cwd=out)
    finally:
        if not had_build:  # setuptools builds in the source tree: leave the checkout as it was
            shutil.rmtree(ROOT / "build", ignore_errors=True)
    return next(out.glob("wfexplain-*.whl"))


@pytest.mark.slow
def test_the_wheel_holds_the_library_the_dashboard_and_the_checkpoints(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"wfexplain", "wfexplain_dashboard", "wfexplain_checkpoints", wheel.name.split("-py3")[0] + ".dist-info"}
    assert {"wfexplain_dashboard/app.py", "wfexplain_dashboard/streamlit.toml",
            "wfexplain_dashboard/views/forget.py", "wfexplain_checkpoints/fmnist-cnn/model.safetensors"} <= set(names)
    assert not [n for n in names if "/retrain/" in n or "/cache/" in n]  # oracles and caches stay in the repository
    meta = email.message_from_bytes(zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))))
    assert meta["License-Expression"] == "MIT" and meta["Requires-Python"] == ">=3.11"
    assert not [r for r in meta.get_all("Requires-Dist") if "==" in r.split(";")[0]]  # ranges, never pins


@pytest.mark.slow
def test_installed_in_a_fresh_venv_it_runs_outside_the_checkout(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies come from this environment (no download); wfexplain itself only from the wheel.
    deps = Path(subprocess.run([sys.executable, "-c", "import torch, pathlib; print(pathlib.Path(torch.__file__).parents[1])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "_deps.pth").write_text(f"{deps}\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
           "WFEXPLAIN_EVAL_LIMIT": "200", "WFEXPLAIN_PRECOMPUTE": "0", "WFEXPLAIN_CACHE_DIR": str(tmp_path / "cache")}

    def run(*cmd: str) -> str:
        result = subprocess.run(list(cmd), cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout

    where = run(str(py), "-c", "import wfexplain, wfexplain_dashboard; print(wfexplain.__file__, wfexplain_dashboard.__file__)")
    assert str(ROOT) not in where and str(venv) in where
    assert run(str(venv / "bin" / "wfexplain"), "--version").strip() == f"wfexplain {PYPROJECT['project']['version']}"
    assert "--checkpoint-dir" in run(str(venv / "bin" / "wfexplain"), "dashboard", "--help")
    assert '"fmnist-cnn"' in run(str(venv / "bin" / "wfexplain"), "list", "--json")  # shipped, installed with it
    run(str(venv / "bin" / "wfexplain"), "fetch-demo", "--out", "demo", "fmnist-cnn")
    report = run(str(venv / "bin" / "wfexplain"), "evaluate", "--checkpoint", "demo/fmnist-cnn", "--limit", "100", "--json")
    assert '"original_accuracy"' in report
    page = run(str(py), "-c", "import pathlib, wfexplain_dashboard\n"
               "from streamlit.testing.v1 import AppTest\n"
               "at = AppTest.from_file(str(pathlib.Path(wfexplain_dashboard.__file__).with_name('app.py')), "
               "default_timeout=300)\n"
               "at.run()\n"
               "assert not at.exception, [e.value for e in at.exception]\n"
               "print([t.value for t in at.title])")
    assert "Forget" in page
