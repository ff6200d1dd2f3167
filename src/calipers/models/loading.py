"""Build a network from ``"module:callable"`` plus arguments, adapted to the data."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from calipers._options import did_you_mean
from calipers._paths import _MODEL_DIRS, add_model_dir

__all__ = ["add_model_dir", "build_network", "resolve_callable"]

# add_model_dir lives in the lowest layer so that config.py can call it (NOTE [Config folder
# imports]); it is re-exported here, next to the loader that reads it.

def _import(mod_name: str):
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        top = mod_name.split(".")[0]
        dirs = [str(d) for d in _MODEL_DIRS if (d / top).is_dir() or (d / f"{top}.py").is_file()]
        if exc.name != top or not dirs:
            raise
    sys.path[:0] = dirs
    try:
        return importlib.import_module(mod_name)
    finally:
        for d in dirs:
            sys.path.remove(d)


def resolve_callable(spec: str | Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Import ``"package.module:callable"`` (or pass a callable through)."""
    if callable(spec):
        return spec
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ValueError(
            f"model must be 'module:callable', e.g. 'calipers.models:CNN' or "
            f"'my_package.nets:build'; got {spec!r}."
        )
    mod_name, attr = spec.split(":")
    try:
        module = _import(mod_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import module {mod_name!r} for model {spec!r}: {exc}. Check the spelling and "
            "that the module is beside the config, on PYTHONPATH, or installed."
        ) from exc
    try:
        fn = getattr(module, attr)
    except AttributeError:
        public = sorted(n for n in dir(module) if not n.startswith("_"))
        hint = did_you_mean(attr, public) or "."
        raise ValueError(
            f"module {mod_name!r} has no callable {attr!r} (model {spec!r}){hint} "
            f"It defines: {', '.join(public[:20])}."
        ) from None
    if not callable(fn):
        raise ValueError(f"{spec!r} is not callable; it is a {type(fn).__name__}.")
    return fn


def build_network(
    spec: str | Callable[..., nn.Module],
    args: Mapping[str, Any] | None = None,
    *,
    input_shape: Sequence[int],
    n_outputs: int,
) -> nn.Module:
    """Call the model factory with ``args``, adding ``input_shape``/``n_outputs`` if it takes them.

    A user factory that does not accept ``input_shape`` or ``n_outputs`` gets only ``args``.
    """
    fn = resolve_callable(spec)
    kwargs = dict(args or {})
    try:
        params = inspect.signature(fn).parameters
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    except (TypeError, ValueError):  # builtins without a signature
        params, var_kw = {}, True
    for name, value in (("input_shape", tuple(int(s) for s in input_shape)),
                        ("n_outputs", int(n_outputs))):
        if name not in kwargs and (var_kw or name in params):
            kwargs[name] = value
    try:
        net = fn(**kwargs)
    except TypeError as exc:
        raise ValueError(
            f"could not build model {spec!r} with args {dict(args or {})}: {exc}"
        ) from exc
    if not isinstance(net, nn.Module):
        raise ValueError(f"model {spec!r} returned a {type(net).__name__}, not a torch.nn.Module.")
    return net
