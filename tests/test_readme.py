"""The README's Python example runs as written."""

import re
from pathlib import Path

import numpy as np
import soundfile as sf

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    t = np.arange(44100) / 44100
    sf.write("in.wav", (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 44100)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert Path("out.flac").exists()
