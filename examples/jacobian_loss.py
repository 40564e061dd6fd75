"""A user-defined loss through the Python API: a Jacobian-based criterion with ``torch.func.jacrev``.

The thesis trains the activation search with a Jacobian-based surrogate criterion. Any criterion plugs
in the same way: **subclass the space's supernet and override ``loss(batch)``**, then register a space
whose ``supernet()`` returns it. Every strategy calls only ``supernet.loss(batch)`` (for the weight
step and the α step alike), so nothing else changes, and the new space works with the Python API,
``dnas search --plugin`` and the conformance suite (``dnas.testing.check_space``).

Here: ``loss = MSE(f(x), y) + λ · mean ‖∂f/∂x − ∂y/∂x‖²`` (a Sobolev-style criterion), with the
target derivative of the synthetic data ``y = exp(x) + max(x, 0)``: ``exp(x) + 1[x > 0]``.

Run:  OMP_NUM_THREADS=1 python examples/jacobian_loss.py
      (or: PYTHONPATH=examples dnas --plugin jacobian_loss search --space activation-jacobian \
            --strategy darts --data synthetic-regression --epochs 3)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

import dnas
from dnas.testing import check_space
from dnas.spaces.activation import ActivationConfig, ActivationSpace, ActivationSupernet
from dnas.spaces.mlp_depth import task_loss


def target_jacobian(x: torch.Tensor) -> torch.Tensor:
    """∂y/∂x of ``synthetic-regression`` (y = Σ_j exp(x_j) + max(x_j, 0)): shape (batch, 1, in)."""
    return (torch.exp(x) + (x > 0).to(x.dtype)).unsqueeze(1)


class JacobianSupernet(ActivationSupernet):
    def loss(self, batch):
        x, y = batch
        out = task_loss(self(x), y, self.task)
        # samples are independent, so the Jacobian of Σ_b f(x_b) w.r.t. x holds every per-sample
        # Jacobian ∂f(x_b)/∂x_b: shape (out, batch, in) -> (batch, out, in); differentiable (create_graph)
        J = torch.func.jacrev(lambda inp: self(inp).sum(0))(x).permute(1, 0, 2)
        jac = (J - target_jacobian(x)).pow(2).mean()
        out["jacobian"] = jac.detach()
        out["loss"] = out["loss"] + self.space.config.jacobian_weight * jac
        return out


@dataclass
class JacobianConfig(ActivationConfig):
    jacobian_weight: float = 1.0  # λ


@dnas.register_space("activation-jacobian")
class JacobianActivationSpace(ActivationSpace):
    Config = JacobianConfig

    def supernet(self, task):
        return JacobianSupernet(self, task)


if __name__ == "__main__":
    import tempfile

    torch.manual_seed(0)
    check_space("activation-jacobian")  # the same contract as the built-in spaces
    with tempfile.TemporaryDirectory() as out:
        result = dnas.search(
            space="activation-jacobian", strategy="darts", data="synthetic-regression",
            space_config={"widths": [8]}, strategy_config={"epochs": 3, "a_lr": 0.05},
            data_config={"batch_size": 64}, out=f"{out}/run", progress=False,
        )
        last = result.history[-1]
        print("train loss", last["train_loss"], "jacobian term", last["train_jacobian"])
        print(dnas.create_space("activation").describe(result.genotype))
