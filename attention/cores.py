"""Recurrent cores behind one contract, so callers never know whether the state is h or (h, c).

* ``initial_state(batch, device) -> state``
* ``step(g (B, input_size), state) -> (h (B, hidden_size), state)``
* ``hidden(state) -> h``, the output a state corresponds to (used for the first where of soft attention).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attention.linear import Linear, linear
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
    """An LSTM core (the paper's choice for the game); state (h, c), both zero at the start.

    The parameters are those of ``nn.LSTMCell`` (gates i, f, g, o), but the step is written out so that its
    two products go through :func:`attention.linear.linear` (oneDNN on the CPU); it equals
    ``nn.LSTMCell`` up to float rounding (tests/test_model.py).
    """

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
        h, c = state
        cell = self.cell
        gates = linear(g, cell.weight_ih, cell.bias_ih) + linear(h, cell.weight_hh, cell.bias_hh)
        input_gate, forget_gate, candidate, output_gate = gates.chunk(4, dim=1)
        c = torch.sigmoid(forget_gate) * c + torch.sigmoid(input_gate) * torch.tanh(candidate)
        h = torch.sigmoid(output_gate) * torch.tanh(c)
        return h, (h, c)
