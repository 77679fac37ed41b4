"""Gradient-boosted decision trees as a torch module: `BoostedTrees`.

A fitted ensemble (one per output: a binary classifier's raw score) is held as flat node arrays in buffers, so it
lives in a checkpoint's ``model.safetensors`` beside a network's weights — no pickle. `forward` walks every tree
for every row at once, one level per step: ``x[feature] <= threshold`` goes left, a NaN goes where the node sends
missing values, a leaf points to itself. The raw score of output k is its baseline plus the leaf values of its
trees; a sigmoid makes it a probability.

Written here rather than taken from a library: scikit-learn fits the trees (`fxlens.train.stack`), but its
predictor is a pickled Python object, and tools that compile trees to tensors (hummingbird) are not installed
here. The evaluation is a dozen lines, and the tests check it against scikit-learn's own probabilities.
"""

from __future__ import annotations

import torch
from torch import nn

from fxlens.errors import FxlensError


class BoostedTrees(nn.Module):
    """`n_outputs` boosted-tree ensembles over `n_inputs` features; ``forward(x (N, n_inputs)) -> (N, n_outputs)``
    raw scores (float64).

    Buffers (one row per node of all trees together): ``feature``, ``threshold``, ``left``, ``right`` (global node
    indices; a leaf's are its own), ``missing_left``, ``value`` (a leaf's contribution, 0 elsewhere); per tree
    ``root`` and ``output`` (which raw score it adds to); per output ``baseline``. `max_depth` bounds the walk."""

    def __init__(self, n_inputs: int, n_outputs: int, n_trees: int, n_nodes: int, max_depth: int) -> None:
        super().__init__()
        self.n_inputs, self.n_outputs, self.max_depth = int(n_inputs), int(n_outputs), int(max_depth)
        self.register_buffer("feature", torch.zeros(n_nodes, dtype=torch.int64))
        self.register_buffer("threshold", torch.zeros(n_nodes, dtype=torch.float64))
        self.register_buffer("left", torch.zeros(n_nodes, dtype=torch.int64))
        self.register_buffer("right", torch.zeros(n_nodes, dtype=torch.int64))
        self.register_buffer("missing_left", torch.zeros(n_nodes, dtype=torch.bool))
        self.register_buffer("value", torch.zeros(n_nodes, dtype=torch.float64))
        self.register_buffer("root", torch.zeros(n_trees, dtype=torch.int64))
        self.register_buffer("output", torch.zeros(n_trees, dtype=torch.int64))
        self.register_buffer("baseline", torch.zeros(n_outputs, dtype=torch.float64))

    def config(self) -> dict:
        """What `__init__` needs to rebuild this module before its buffers are loaded."""
        return {"n_inputs": self.n_inputs, "n_outputs": self.n_outputs, "n_trees": int(self.root.numel()),
                "n_nodes": int(self.feature.numel()), "max_depth": self.max_depth}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.n_inputs:
            raise FxlensError(f"the trees read (N, {self.n_inputs}) inputs, got shape {tuple(x.shape)}")
        x = x.double()
        node = self.root.expand(x.shape[0], -1)  # (N, trees)
        for _ in range(self.max_depth):
            v = x.gather(1, self.feature[node])
            go_left = torch.where(torch.isnan(v), self.missing_left[node], v <= self.threshold[node])
            node = torch.where(go_left, self.left[node], self.right[node])
        scores = x.new_zeros(x.shape[0], self.n_outputs).index_add_(1, self.output, self.value[node])
        return scores + self.baseline
