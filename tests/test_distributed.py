r"""Two CPU processes on the gloo backend take the same step as one process
that sees both processes' tasks."""
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_train import tiny_config
from torch_geometric.data import Batch

from gnn_metamf.train import Trainer, load_parts, sampler_seed, task_sampler


def _worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=world_size)
    try:
        trainer = Trainer(tiny_config())
        trainer.train_step()
        torch.save(trainer.model.state_dict(), f'{out_dir}/rank{rank}.pt')
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_two_processes_equal_one_with_both_batches(tmp_path):
    # A worker stuck in a collective would hang the suite: fail instead.
    context = mp.start_processes(_worker, args=(2, tmp_path / 'init',
                                                tmp_path),
                                 nprocs=2, join=False, start_method='spawn')
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail('the two gloo workers did not finish in 120 s')
    states = [torch.load(tmp_path / f'rank{r}.pt', weights_only=True)
              for r in range(2)]

    # One process: the mean of the two processes' losses, one step.
    config = tiny_config()
    trainer = Trainer(config, parts=load_parts(config))
    part = trainer.parts['synthetic']['train']
    losses = []
    for rank in range(2):
        sampler = task_sampler(config, part, sampler_seed(config.seed, rank,
                                                          0))
        batch = Batch.from_data_list(sampler.next_batch(config.batch_size))
        losses.append(trainer.model.loss(batch)[0])
    trainer.optimizer.zero_grad()
    ((losses[0] + losses[1]) / 2).backward()
    torch.nn.utils.clip_grad_norm_(trainer.model.parameters(),
                                   config.grad_clip)
    trainer.optimizer.step()

    reference = trainer.model.state_dict()
    for key, value in reference.items():
        torch.testing.assert_close(states[0][key], states[1][key])
        torch.testing.assert_close(states[0][key], value, rtol=1e-5,
                                   atol=1e-6)
    assert any(not torch.equal(value, Trainer(config).model.state_dict()[k])
               for k, value in reference.items())  # The step moved them.
