"""edge-anomaly: learn "normal" from good images, find anomalies at the edge.

This package is the training side (data, backbones, templates, evaluation, CLI). Importing it
must stay cheap and torch-free so that the CLI also works on an edge box without torch.
"""

from runtime import package_version

__version__ = package_version()
