"""Set-up files agree: requirements pinned, environment.yml reads the same list, DVC config."""

from __future__ import annotations

import configparser
import re

import yaml
from conftest import ROOT


def _requirements() -> list[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_requirements_are_pinned_with_torch_pair():
    reqs = _requirements()
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[\w.]+", r) for r in reqs), reqs
    assert "torch==2.14.1" in reqs and "torchvision==0.29.1" in reqs


def test_environment_yml_reads_requirements_txt():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_sections == [["-r requirements.txt", "-e ."]]
    assert "pip" in env["dependencies"]


def test_dvc_analytics_off():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert config["core"]["analytics"] == "false"


def test_ci_runs_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("make repro", "make test"):
        assert command in readme and command in ci


def test_paper_scale_names_existing_params():
    from medclust.scale import set_param_args

    args = set_param_args(ROOT / "paper_scale.yaml", ROOT / "params.yaml")
    assert len(args) % 2 == 0 and all(a == "-S" for a in args[::2])
