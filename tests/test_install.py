"""`pip install .`: the package, the `qa` command and `from qakit import pipeline` work outside the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv

import pytest

from helpers import OFFLINE_ENV, REPO

pytestmark = pytest.mark.slow


def test_pip_install_gives_the_command_and_the_package(tmp_path):
    """The wheel built from the checkout, installed into a fresh environment (its dependencies taken from this
    one's), run from another folder."""
    source = tmp_path / "source"  # a copy: the build writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "tests", "benchmarks", "docs", "data", "outputs",
                                                                "build", "*.egg-info", "__pycache__"))
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                            "-q", "-w", str(wheels)], capture_output=True, text=True, cwd=tmp_path)
    assert built.returncode == 0, built.stderr[-2000:]
    env_dir = tmp_path / "env"
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    wheel = next(wheels.glob("qa_squad-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                              str(wheel)], capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stderr[-2000:]
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", **OFFLINE_ENV}
    helped = subprocess.run([str(env_dir / "bin" / "qa"), "--help"], capture_output=True, text=True, cwd=tmp_path,
                            env=env)
    assert helped.returncode == 0 and "--serve" in helped.stdout and "--model_name_or_path" in helped.stdout
    probe = ("import qakit, qa; from qakit import pipeline; from qakit.pipelines import QuestionAnsweringPipeline; "
             "from metrics.scoring import score_answers; print(qakit.__file__, qa.__file__, pipeline.__name__)")
    imported = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert imported.returncode == 0, imported.stderr[-2000:]
    files = imported.stdout.split()
    assert all(str(env_dir) in f for f in files[:2]) and files[2] == "pipeline"  # installed, not the checkout
