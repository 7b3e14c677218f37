"""Recurrent cores behind one contract, so callers never know whether the state is h or (h, c).

* ``initial_state(batch, device) -> state``
* ``step(g (B, input_size), state) -> (h (B, hidden_size), state)``
* ``hidden(state) -> h``, the output a state corresponds to (used for the first where of soft attention).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attention.linear import Linear
from attention.registry import Registry

CORES = Registry("core")


@CORES.register("rnn")
class RectifierRNN(nn.Module):
    """RAM sec. 4: h_t = Rect(Linear(h_{t-1}) + Linear(g_t)), h_0 = 0."""

    def __init__(self, *, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.input_to_hidden = Linear(input_size, hidden_size)
        self.hidden_to_hidden = Linear(hidden_size, hidden_size)

    def initial_state(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(batch, self.hidden_size, device=device)

    def hidden(self, state: torch.Tensor) -> torch.Tensor:
        return state

    def step(self, g: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.input_to_hidden(g) + self.hidden_to_hidden(state))
        return h, h


@CORES.register("lstm")
class LSTMCore(nn.Module):
    """An LSTM core (the paper's choice for the game); state (h, c), both zero at the start."""

    def __init__(self, *, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.cell = nn.LSTMCell(input_size, hidden_size)

    def initial_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(batch, self.hidden_size, device=device)
        return zeros, zeros.clone()

    def hidden(self, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return state[0]

    def step(self, g: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        h, c = self.cell(g, state)
        return h, (h, c)
