"""The task graph the partitioner works on.

The graph is extracted one layer down, in :mod:`dnnsplit.predictor.model_graph`, because the
predictor composes per-kernel predictions over the same graph and nothing may import "backwards"
(docs/design.md: partition -> predictor). This module is the partitioner's name for it.
"""

from dnnsplit.predictor.model_graph import TaskGraph

__all__ = ["TaskGraph"]
