"""`dha run --nproc N`: the same command started on N processes through torchrun's own entry point
(`torch.distributed.run`), so `dha run RECIPE --nproc 8` and `torchrun --nproc_per_node 8 -m cli run RECIPE`
are one thing. dha adds no launcher logic of its own: it builds torchrun's argument list, and every process
gets the user's own command line minus the launcher's flags (so a flag added to `dha run` later reaches
every process without being listed here)."""

from __future__ import annotations

from dataclasses import dataclass

from dha_pipeline.errors import Stopped


LAUNCH_FLAGS = ("--nproc", "--nnodes", "--node-rank", "--rdzv-endpoint", "--rdzv-id")
"""The flags of `dha run` that say how to launch (each takes a value); torchrun gets them, the processes do not."""


def forwarded(argv: list[str]) -> list[str]:
    """The command line each process runs: `argv` (the user's, from the command on) without the launch flags
    and their values, in either form (`--nproc 8`, `--nproc=8`)."""
    kept: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
            continue
        name, equals, _ = arg.partition("=")
        if name in LAUNCH_FLAGS:
            skip_value = not equals
            continue
        kept.append(arg)
    return kept


@dataclass(frozen=True)
class Launch:
    """How many processes, on how many nodes, meeting where (torchrun's flags of the same names)."""

    nproc: int
    nnodes: str = "1"
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    rdzv_id: str = "dha"

    def torchrun_args(self, command: list[str]) -> list[str]:
        """torchrun's command line for `python -m cli COMMAND...` on every process."""
        args = ["--nproc-per-node", str(self.nproc), "--nnodes", self.nnodes]
        if self.rdzv_endpoint:
            args += ["--rdzv-backend", "c10d", "--rdzv-endpoint", self.rdzv_endpoint, "--rdzv-id", self.rdzv_id]
        elif self.nnodes != "1":
            args += ["--node-rank", str(self.node_rank)]
        else:
            args += ["--standalone"]
        return [*args, "--module", "cli", *command]


def run_processes(launch: Launch, command: list[str]) -> int:
    """Start `command` on every process through torchrun and wait; the exit code of the first failed
    process (each process printed its own error line), 0 when all succeeded."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser
    from torch.distributed.run import run as torchrun

    try:
        torchrun(get_args_parser().parse_args(launch.torchrun_args(command)))
    except ChildFailedError as failed:
        _, first = failed.get_first_failure()
        return first.exitcode if first.exitcode > 0 else 1
    except SignalException as stopped:  # torchrun stopped every process (a job scheduler's SIGTERM)
        number = int(stopped.sigval)
        raise Stopped(number, f"the {launch.nproc} processes were stopped by signal {number}; the last checkpoint "
                              "is kept", "continue with the same command and --resume") from None
    return 0
