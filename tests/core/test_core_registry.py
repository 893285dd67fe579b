import pytest

from thinktwice.errors import ConfigError, UnknownNameError
from thinktwice.registry import Registry, strategies


def test_lazy_target_is_resolved_on_first_use():
    r: Registry[object] = Registry("widget")
    r.add("od", "collections:OrderedDict")
    obj = r.create("od", a=1)
    assert type(obj).__name__ == "OrderedDict" and obj["a"] == 1


def test_unknown_name_lists_valid_names_and_suggests():
    r: Registry[object] = Registry("widget")
    r.add("self-consistency", dict)
    r.add("greedy", dict)
    with pytest.raises(UnknownNameError) as e:
        r.get("self-consistancy")
    msg = str(e.value)
    assert "Did you mean 'self-consistency'" in msg and "greedy" in msg


def test_duplicate_registration_is_refused():
    r: Registry[object] = Registry("widget")
    r.add("a", dict)
    with pytest.raises(ConfigError):
        r.add("a", list)


def test_builtin_strategies_registered():
    assert {"greedy", "self-consistency"} <= set(strategies.names())


def test_import_thinktwice_is_light():
    import subprocess
    import sys

    code = ("import sys, thinktwice, thinktwice.lm, thinktwice.strategies, thinktwice.signals;"
            "heavy=[m for m in ('torch','llama_cpp','transformers','fastapi') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_registries_load_their_builtins_without_importing_the_layer_first():
    import subprocess
    import sys

    code = ("from thinktwice.registry import strategies, tasks, backends, signals;"
            "print(int('greedy' in strategies), int('gsm8k' in tasks), int('scripted' in backends),"
            " int('self-certainty' in signals))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "1", "1"]
