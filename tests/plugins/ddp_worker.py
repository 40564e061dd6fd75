"""A rank of a 2-process gloo group taking one DARTS step on its shard of a global batch."""
import torch
import torch.distributed as dist

import dnas
from dnas.engine.distributed import shard
from dnas.space import Task

TASK = Task((3, 8, 8), 4)


def global_batches(n=8):
    g = torch.Generator().manual_seed(7)
    make = lambda: (torch.randn(n, *TASK.input_shape, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g))  # noqa: E731
    return make(), make()


def one_step(order: int, train, val):
    import toyspace  # noqa: F401

    torch.manual_seed(0)
    net = dnas.create_space("toy-mlp").supernet(TASK).double()
    strategy = dnas.create_strategy("darts", order=order, a_lr=0.01)
    state = strategy.init_state(net)
    strategy.step(net, train, val, state)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def worker(rank: int, world: int, store: str, out: str, order: int):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        train, val = global_batches()
        idx = shard(list(range(len(train[1]))))
        state = one_step(order, (train[0][idx], train[1][idx]), (val[0][idx], val[1][idx]))
        if rank == 0:
            torch.save(state, out)
        dist.barrier()  # neither rank tears gloo down while the other still talks to it (a rare SIGABRT under load)
    finally:
        dist.destroy_process_group()
