"""Offline stand-ins for the online-only imports of ultralytics' PyPI package ``yolov5==7.0.14``.

Their v7.0 code reaches for the network in places that have nothing to do with what our benchmarks
ask of it; on a machine with no network (this one, the GPU machine) those imports or calls fail.
This writes, into a folder to put first on ``PYTHONPATH``:

* ``ultralytics/utils/checks.py``: the package imports ``check_requirements`` from the newer
  ``ultralytics`` package (not a dependency it declares); the stub's version checks nothing;
* ``huggingface_hub``: their ``attempt_load`` asks the Hub first for every ``--weights``; the stub's
  "no such repository" sends it on to the local file;
* ``roboflow``: their ``train.py`` imports its client at start-up, used only with ``--roboflow_token``;
* ``pkg_resources`` (only where setuptools >= 81 removed it): they use ``parse_version`` alone;

and puts a TrueType font where their plots download ``Arial.ttf`` from (any font will do).

    python benchmarks/ultralytics_stubs.py /tmp/ultralytics-stubs   # prints the folder
    PYTHONPATH=/tmp/ultralytics-stubs:. python benchmarks/ultralytics_check.py ...
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

_FILES = {
    "ultralytics/__init__.py": "",
    "ultralytics/utils/__init__.py": "",
    "ultralytics/utils/checks.py": "def check_requirements(*args, **kwargs):\n    return True\n",
    "huggingface_hub/__init__.py": (
        "from huggingface_hub.utils._validators import HFValidationError\n\n\n"
        "def list_repo_files(*args, **kwargs):\n    raise HFValidationError('offline stub: no Hub here')\n\n\n"
        "def hf_hub_download(*args, **kwargs):\n    raise HFValidationError('offline stub: no Hub here')\n"),
    "huggingface_hub/utils/__init__.py": "",
    "huggingface_hub/utils/_validators.py": "class HFValidationError(ValueError):\n    pass\n",
    "huggingface_hub/utils/_errors.py": "class RepositoryNotFoundError(OSError):\n    pass\n",
    "roboflow/__init__.py": (
        "class Roboflow:\n    def __init__(self, *args, **kwargs):\n"
        "        raise RuntimeError('offline stub: no Roboflow here')\n"),
    "roboflow/core/__init__.py": "",
    "roboflow/core/version.py": "class Version:\n    pass\n",
}
_PKG_RESOURCES = "from packaging.version import parse as parse_version  # noqa: F401\n"


def write_stubs(folder: Path) -> Path:
    """Write the stand-ins into ``folder`` (created) and the font into ``~/.config/Ultralytics``."""
    folder = Path(folder).resolve()
    for relative, text in _FILES.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if importlib.util.find_spec("pkg_resources") is None:
        (folder / "pkg_resources").mkdir(exist_ok=True)
        (folder / "pkg_resources" / "__init__.py").write_text(_PKG_RESOURCES)
    import matplotlib  # their own dependency: its bundled DejaVuSans stands in for Arial

    fonts = Path.home() / ".config" / "Ultralytics"
    fonts.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf",
                    fonts / "Arial.ttf")
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} FOLDER")
    print(write_stubs(Path(sys.argv[1])))
