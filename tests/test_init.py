import subprocess
import sys

import roleprobe as rp


def test_every_public_name_resolves():
    for name in rp.__all__:
        assert getattr(rp, name) is not None, name


def test_all_matches_the_lazy_table():
    assert set(rp.__all__) == {"__version__", *rp._EXPORTS}


def test_import_is_light():
    code = "import sys, roleprobe; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_an_attribute_error():
    try:
        rp.does_not_exist  # noqa: B018
    except AttributeError as err:
        assert "does_not_exist" in str(err)
    else:
        raise AssertionError("expected AttributeError")
