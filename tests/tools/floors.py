"""Print pip constraints pinning every dependency in pyproject.toml to its declared floor.

`make floors` installs exactly these in a scratch venv and runs the suite, so a `>=` in
pyproject.toml is a version the code was seen to run on, not a guess.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
requirements = list(project["dependencies"])
for extra in project.get("optional-dependencies", {}).values():
    requirements.extend(extra)
for requirement in requirements:
    found = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+?)\s*>=\s*([^,;\s]+)", requirement)
    if found:
        name = found.group(1).split("[", 1)[0]
        print(f"{name}=={found.group(2)}")
