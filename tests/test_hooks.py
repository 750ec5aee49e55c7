"""User hooks: resolving module:function / file.py:function / callables, calling, errors."""

from __future__ import annotations

import sys

import pytest

from ccat_tf.errors import HookError
from ccat_tf.hooks import call_hooks, hook_name, resolve_hooks


def test_resolve_module_file_and_callable(tmp_path, monkeypatch):
    (tmp_path / "studio_hooks.py").write_text(
        "calls = []\ndef on_frame(frame, **kw):\n    calls.append(frame)\n"
    )
    script = tmp_path / "loose.py"
    script.write_text("def hello(name):\n    return 'hi ' + name\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def plain():
        return "plain"

    hooks = resolve_hooks(["studio_hooks:on_frame", f"{script}:hello", plain, ""], name="test")
    assert len(hooks) == 3
    assert call_hooks("test", hooks, frame=7, name="x", extra=1) == [None, "hi x", "plain"]
    assert sys.modules["studio_hooks"].calls == [7]
    assert hook_name(plain).endswith("plain")


@pytest.mark.parametrize(
    "spec,match",
    [
        ("no_colon", "not 'module:function'"),
        ("no_such_module_xyz:f", "cannot import no_such_module_xyz"),
        ("os:no_such_function", "os has no attribute"),
        ("os:sep", "is not callable"),
        ("/nonexistent/hooks.py:f", "does not exist"),
    ],
)
def test_resolve_errors_are_one_line_and_name_the_hook(spec, match):
    with pytest.raises(HookError, match=match) as err:
        resolve_hooks([spec], name="before_render")
    assert "before_render hook" in str(err.value) and "\n" not in str(err.value)


def test_exception_in_hook_becomes_hook_error():
    def bad(frame):
        raise ValueError(f"frame {frame} is cursed\nsecond line")

    with pytest.raises(HookError) as err:
        call_hooks("after_frame_render", [bad], frame=1001)
    msg = str(err.value)
    assert msg.startswith("after_frame_render hook") and "bad" in msg
    assert "ValueError: frame 1001 is cursed" in msg and "\n" not in msg


def test_keyboard_interrupt_passes_through():
    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_hooks("render_progress", [stop], done=1)
