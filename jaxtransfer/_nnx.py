"""Small compatibility helpers for Flax NNX variables across flax versions."""

from __future__ import annotations

from typing import Any

from flax import nnx

__all__ = ["get_value", "module_list", "set_value"]


def get_value(var: Any) -> Any:
    """A variable's value (``get_value`` on flax >= 0.12, ``.value`` before); non-variables pass through."""
    if hasattr(var, "get_value"):
        return var.get_value()
    return var.value if hasattr(var, "value") else var


def set_value(var: Any, value: Any) -> None:
    """Assign a variable's value (``set_value`` on flax >= 0.12, ``.value =`` before)."""
    if hasattr(var, "set_value"):
        var.set_value(value)
    else:  # pragma: no cover - older flax
        var.value = value


def module_list(modules: list) -> Any:
    """A list of submodules as NNX wants it (``nnx.List`` on flax >= 0.12, a plain list before)."""
    return nnx.List(modules) if hasattr(nnx, "List") else modules
