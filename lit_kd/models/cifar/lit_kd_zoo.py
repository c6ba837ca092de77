"""timm's module name for the zoo: every zoo model is registered under ``lit_kd_zoo``.

timm files a model under the last part of its entry point's module name. Registered from their family
files, the zoo's models would join timm's own modules (``resnet``, ``vgg``) and change
``timm.list_models(module="resnet")`` for the whole process; registered through
:func:`register_zoo_model`, they are listed by ``timm.list_models(module="lit_kd_zoo")`` and leave
timm's modules as they are. Each entry point is also an attribute of this module (timm looks the
module up by name, and pickled references to entry points resolve here).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from timm.models import register_model

__all__: list[str] = ["register_zoo_model"]  # timm appends every registered model name

#: The pretrained configurations of every zoo model, gathered from the family files for timm.
default_cfgs: dict[str, Any] = {}


def register_zoo_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``timm.models.register_model`` under the module name ``lit_kd_zoo``; the family module that
    defines ``fn`` must have set its ``default_cfgs`` already."""
    family = sys.modules[fn.__module__]
    default_cfgs[fn.__name__] = family.default_cfgs[fn.__name__]
    fn.__module__ = __name__
    setattr(sys.modules[__name__], fn.__name__, fn)
    return register_model(fn)
