"""scripts/uv_options.py: pip's configuration as uv's options."""

import importlib.util
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module():
    spec = importlib.util.spec_from_file_location("uv_options", os.path.join(REPO, "scripts", "uv_options.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# `pip config list` as a machine with a local mirror prints it: files first, then PIP_* variables.
LISTING = """global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
:env:.default-timeout='180'
:env:.find-links='/srv/wheels'
"""


def test_pip_settings_become_uv_options_with_pip_s_version_rule():
    uv = _module()
    settings = uv.pip_settings(LISTING)
    assert settings["find-links"] == "/srv/wheels"  # the environment's value wins, as in pip
    assert uv.uv_options(settings) == [
        "--index-strategy",
        "unsafe-best-match",
        "--extra-index-url",
        "file:///opt/pypi/simple",
        "--extra-index-url",
        "file:///opt/pypi-more/simple",
        "--find-links",
        "/srv/wheels",
        "--constraint",
        "/etc/xdg/pip/constraints.txt",
    ]


def test_no_pip_configuration_gives_only_the_version_rule():
    uv = _module()
    assert uv.uv_options(uv.pip_settings("")) == ["--index-strategy", "unsafe-best-match"]
