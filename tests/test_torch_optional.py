"""The torch engine is optional: nothing imports torch unless --engine torch asks for it.

These run with or without PyTorch installed.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = "anna\nbob\ncarla\ndave\neve\nfrank\ngina\nhal\nida\njon\n" * 20

PROBE = """
import sys
{block}
sys.argv = ["charlm"] + {args!r}
from charlm.cli import main
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
sys.stderr.write("TORCH-IMPORTED=%s\\n" % ("torch" in sys.modules and sys.modules["torch"] is not None))
sys.exit(code)
"""


def charlm(args, tmp_path, block=""):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("CHARLM_CHECKPOINT", None)
    return subprocess.run([sys.executable, "-c", PROBE.format(block=block, args=[str(a) for a in args])],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_import_help_train_score_do_not_import_torch(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT)
    r = subprocess.run([sys.executable, "-c", "import sys, charlm, charlm.cli, charlm.train, charlm.score, "
                        "charlm.torch_engine; print('torch' in sys.modules)"],
                       env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr
    for args in (["--help"], ["train", "--help"],
                 ["train", "c.txt", "--steps", "2", "--hidden-size", "4", "--num-layers", "1", "--batch-size", "2",
                  "--seq-len", "4", "-c", "m.npz"],
                 ["score", "-c", "m.npz", "anna", "bob"], ["info", "m.npz"]):
        r = charlm(args, tmp_path)
        assert r.returncode == 0, r.stderr
        assert "TORCH-IMPORTED=False" in r.stderr, args
    # positive control: the probe does see torch when the torch engine is asked for (and installed)
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    r = charlm(["score", "-c", "m.npz", "anna", "--engine", "torch", "--device", "cpu"], tmp_path)
    assert r.returncode == 0 and "TORCH-IMPORTED=True" in r.stderr, r.stderr


def test_engine_torch_without_torch_is_one_line_naming_the_extra(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT)
    block = "sys.modules['torch'] = None   # as if PyTorch were not installed"
    for args in (["train", "c.txt", "--steps", "2", "--engine", "torch"], ["score", "anna", "--engine", "torch"]):
        r = charlm(args, tmp_path, block)
        assert r.returncode == 1
        lines = [line for line in r.stderr.splitlines() if line.strip() and not line.startswith("TORCH-IMPORTED")]
        errors = [line for line in lines if line.startswith("error:")]
        assert len(errors) == 1 and 'pip install "charlm[torch]"' in errors[0], r.stderr
        assert "Traceback" not in r.stderr


def test_bad_engine_is_one_line(tmp_path):
    (tmp_path / "c.txt").write_text(TEXT)
    r = charlm(["train", "c.txt", "--steps", "2", "--engine", "jax"], tmp_path)
    assert r.returncode == 1 and "--engine must be numpy or torch" in r.stderr
    r = charlm(["train", "c.txt", "--steps", "2", "--device", "cuda"], tmp_path)
    assert r.returncode == 1 and "--device applies to --engine torch" in r.stderr
