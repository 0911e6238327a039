"""OpenVINO's TensorFlow frontend → patched where it breaks on a supported Python → the same
conversion on every Python autotag supports.

Python 3.13 (PEP 667): `exec()` in a function works on a fresh snapshot of its locals each
call. OpenVINO's TensorFlow frontend (2026.4 and earlier) reads TensorFlow's version with
`exec("import tensorflow")` then `exec("del tensorflow")` inside `get_environment_setup`, so
the second exec raises NameError and every conversion of a TensorFlow function fails on 3.13
(issue 29: "OpenVINO cannot convert the video signature: name 'tensorflow' is not defined").
The function's result is a small dict; when the original raises that NameError, the same dict
is built without exec. A fixed OpenVINO never reaches the fallback.
"""

from __future__ import annotations

import platform
import sys


def patch_tensorflow_frontend() -> None:
    """Make `openvino.frontend.tensorflow.utils.get_environment_setup` work on Python 3.13+.
    Idempotent; does nothing on older Pythons or when the frontend is not installed."""
    if sys.version_info < (3, 13):
        return
    try:
        from openvino.frontend.tensorflow import utils
    except ImportError:
        return
    original = utils.get_environment_setup
    if getattr(original, "autotag_patched", False):
        return

    def get_environment_setup(framework):
        try:
            return original(framework)
        except NameError:  # the exec("del tensorflow") above
            setup = {"python_version": platform.python_version(), "sys_platform": sys.platform}
            if framework == "tf":
                import tensorflow

                setup["tensorflow"] = utils.get_imported_module_version(tensorflow)
            return setup

    get_environment_setup.autotag_patched = True
    utils.get_environment_setup = get_environment_setup
