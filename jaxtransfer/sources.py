"""Small source models trained here (the documented name of :mod:`jaxtransfer.models`' small models).

See :mod:`jaxtransfer.models` for :class:`SmallCNN`, :class:`MLP`,
:func:`train`, :func:`save` and :func:`load`.
"""

from .models import MLP as MLP
from .models import SmallCNN as SmallCNN
from .models import TrainHistory as TrainHistory
from .models import load as load
from .models import model_outputs as model_outputs
from .models import save as save
from .models import train as train

__all__ = ["MLP", "SmallCNN", "TrainHistory", "load", "model_outputs", "save", "train"]
