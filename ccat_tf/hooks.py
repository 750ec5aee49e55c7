"""User callbacks: CopyCat's and the Inference node's Python tab, for scripts and the farm.

A hook is given either as a plain callable (Python API) or as a string (settings files, the CLI):

* ``package.module:function`` imports ``package.module`` (from ``sys.path``, which includes the
  current folder when running ``ccat-tf``) and takes ``function`` from it;
* ``path/to/file.py:function`` loads a script file, as studios keep pipeline snippets as loose files.

Hooks are called with keyword arguments describing the event (``frame=1001, path=..., ...``). A hook
need not accept them all: it receives only the names its signature lists, or everything when it
takes ``**kwargs``, so ``def after_render(): ...`` and ``def after_render(frames, **_): ...``
both work, and adding a keyword later never breaks an existing hook.

As in Nuke, an exception in a hook aborts the render (or training): it becomes a one-line
:class:`~ccat_tf.errors.HookError` naming the hook and the exception.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ccat_tf import regular_file
from ccat_tf.errors import HookError

Hook = Callable[..., Any]


def hook_name(hook: Hook | str) -> str:
    """A readable name for messages: ``module:function`` for functions, the spec for strings."""
    if isinstance(hook, str):
        return hook
    module = getattr(hook, "__module__", None)
    qualname = getattr(hook, "__qualname__", None) or getattr(hook, "__name__", None)
    if qualname is None:
        qualname = type(hook).__name__
    return f"{module}:{qualname}" if module else str(qualname)


def _load_file(path: Path, spec_text: str, name: str | None):
    # A stable module name per file so loading the same script twice reuses one module.
    mod_name = "ccat_tf_hook_" + "".join(c if c.isalnum() else "_" for c in str(path.resolve()))
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise HookError(f"{_what(name)} {spec_text!r}: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except KeyboardInterrupt:
        del sys.modules[mod_name]
        raise
    except BaseException as err:  # SystemExit too: a hook file cannot end the command silently
        del sys.modules[mod_name]
        raise HookError(
            f"{_what(name)} {spec_text!r}: loading {path} raised {type(err).__name__}: {_first_line(err)}"
        ) from err
    return module


def _what(name: str | None) -> str:
    return f"{name} hook" if name else "hook"


def _first_line(err: BaseException) -> str:
    if isinstance(err, SystemExit):
        return f"exit status {err.code!r} (a hook cannot end the program)"
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"


def resolve_hook(spec: Hook | str, name: str | None = None) -> Hook:
    """One hook spec -> a callable. Raises HookError naming the hook when it cannot be found."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or ":" not in spec:
        raise HookError(
            f"{_what(name)} {spec!r} is not 'module:function' (or 'file.py:function'); "
            "give the module and the function name separated by ':'"
        )
    target, _, attr = spec.rpartition(":")
    target, attr = target.strip(), attr.strip()
    if not target or not attr:
        raise HookError(
            f"{_what(name)} {spec!r}: give both a module and a function, as module:function"
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        what = regular_file.problem(path)
        if what is not None:  # a FIFO would block the import, a device never end
            raise HookError(f"{_what(name)} {spec!r}: file {path} cannot be read: {what}")
        module = _load_file(path, spec, name)
    else:
        try:
            module = importlib.import_module(target)
        except KeyboardInterrupt:
            raise
        except BaseException as err:  # SystemExit too
            raise HookError(
                f"{_what(name)} {spec!r}: cannot import {target} ({type(err).__name__}: "
                f"{_first_line(err)}); check the module is on PYTHONPATH"
            ) from err
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise HookError(f"{_what(name)} {spec!r}: {target} has no attribute {attr!r}") from None
    if not callable(obj):
        raise HookError(f"{_what(name)} {spec!r}: {attr} in {target} is not callable")
    return obj


def resolve_hooks(
    specs: Iterable[Hook | str] | Hook | str | None, name: str | None = None
) -> list[Hook]:
    """Resolve a list of hook specs (strings or callables) to callables, failing early.

    Resolving before the work starts means a misspelt hook stops a render in the first second
    rather than after the first frame (or an hour into training).
    """
    if specs is None:
        return []
    if isinstance(specs, str) or callable(specs):
        specs = [specs]
    return [resolve_hook(s, name) for s in specs if not (isinstance(s, str) and not s.strip())]


def _accepted_kwargs(hook: Hook, kwargs: dict[str, Any]) -> dict[str, Any]:
    try:
        sig = inspect.signature(hook)
    except (TypeError, ValueError):  # builtins without a signature: pass everything
        return kwargs
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return kwargs
    names = {
        p.name
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return {k: v for k, v in kwargs.items() if k in names}


def call_hooks(name: str, hooks: Iterable[Hook], /, **kwargs: Any) -> list[Any]:
    """Call each hook of the event ``name`` with the keyword arguments it accepts.

    Returns the hooks' return values. Any exception a hook raises (a :class:`CcatError` included)
    becomes a one-line :class:`HookError` naming the event, the hook and the exception. So does
    ``SystemExit`` (``builtins:exit``, ``sys.exit()`` in a hook would otherwise end the command
    with status 0 and no output) and every other BaseException; only Ctrl-C passes through.
    """
    results = []
    for hook in hooks:
        try:
            results.append(hook(**_accepted_kwargs(hook, kwargs)))
        except KeyboardInterrupt:
            raise
        except BaseException as err:
            raise HookError(
                f"{name} hook {hook_name(hook)} raised {type(err).__name__}: {_first_line(err)}; stopped"
            ) from err
    return results
