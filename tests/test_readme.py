"""The README's first section runs as written: its shell commands and its Python block, offline, in a fresh
folder (``make install`` and the venv activation are what the test process already has)."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def first_section_blocks() -> tuple[list[str], str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## First minute", 1)[1].split("\n### ", 1)[0]
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    commands = [line for line in bash.splitlines() if line.strip() and not line.startswith(". .venv")]
    return commands, python


def test_the_readme_first_section_runs_as_written(tmp_path):
    commands, python = first_section_blocks()
    assert any("classify" in c for c in commands) and any("evaluate" in c for c in commands)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # `python` on PATH is the venv's, as after `. .venv/bin/activate`
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    outputs = []
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    classify = next(out for c, out in zip(commands, outputs) if "classify" in c)
    assert "p: model card temperature" in classify
    assert "accuracy" in outputs[-1] and (tmp_path / "runs" / "first" / "config.json").exists()
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 4 and all("model card temperature" in line for line in lines)
