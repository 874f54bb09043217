#!/usr/bin/env python
"""Submit ``run_net.py`` to a Slurm cluster with submitit (the DeiT / official RegionViT convention).

    python run_with_submitit.py --cfg configs/k400_regionvit_m.yaml --nodes 2 --ngpus 8 \\
        --partition gpu --timeout 4320 --job_dir /shared/runs/k400_m DATA.PATH_TO_DATA_DIR /data/k400

takes the same ``--cfg`` and ``KEY VALUE`` arguments as ``run_net.py``, starts one task per GPU (``--ngpus``
per node on ``--nodes`` nodes), prints the job id and its log files and returns. Each task joins the
process group from the Slurm environment (submitit's ``JobEnvironment``: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT) and runs ``run_net.main``. OUTPUT_DIR defaults to ``--job_dir``, which must be
on a filesystem every node sees.

Preemption and time limits: Slurm signals the job ``--signal_delay`` seconds before the end (submitit's
signal, USR2 by default); every rank finishes its iteration, rank 0 writes a mid-epoch checkpoint, and
the job requeues itself (submitit's ``checkpoint()``); the requeued job resumes from that checkpoint
(TRAIN.AUTO_RESUME) and ends with the weights an uninterrupted run would have had.

``--local`` runs the same job through submitit's local executor on this machine (``--ngpus`` tasks, on the
GPUs or, without one, on the CPU with gloo), waits for it and exits with its status: how the path is
tested without a cluster.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import regionvit_video  # noqa: F401  (installs the pytorchvideo import shim first)

logger = logging.getLogger("regionvit_video.run_with_submitit")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Submission flags, and the ``run_net.py`` arguments (``--cfg``, ``KEY VALUE`` pairs) to pass through."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=True)
    parser.add_argument("--cfg", dest="cfg_file", required=True, help="config YAML, as for run_net.py")
    parser.add_argument("--nodes", type=int, default=1, help="nodes (default 1)")
    parser.add_argument("--ngpus", type=int, default=8, help="GPUs, and so tasks, per node (default 8)")
    parser.add_argument("--partition", default=None, help="Slurm partition")
    parser.add_argument("--timeout", type=int, default=4320, help="job time limit in minutes (default 3 days)")
    parser.add_argument("--job_dir", required=True, help="submitit logs; OUTPUT_DIR unless the config sets it")
    parser.add_argument("--account", default=None, help="Slurm --account")
    parser.add_argument("--qos", default=None, help="Slurm --qos")
    parser.add_argument("--constraint", default=None, help="Slurm --constraint (e.g. a GPU type)")
    parser.add_argument("--cpus_per_task", type=int, default=10, help="CPU cores per task (data loading)")
    parser.add_argument("--mem_gb", type=int, default=0, help="memory per node in GB (0: Slurm's default)")
    parser.add_argument("--signal_delay", type=int, default=120,
                        help="seconds before the time limit at which Slurm warns the job (default 120)")
    parser.add_argument("--name", default="regionvit_video", help="job name")
    parser.add_argument("--local", action="store_true",
                        help="run through submitit's local executor here, wait, and exit with the job's status")
    args, rest = parser.parse_known_args(argv)
    if args.nodes < 1 or args.ngpus < 1:
        parser.error("--nodes and --ngpus must be at least 1")
    return args, ["--cfg", args.cfg_file, *rest]


def _checked_args(run_net_args: list[str], job_dir: str) -> list[str]:
    """``run_net_args`` with ``OUTPUT_DIR job_dir`` unless the command line names OUTPUT_DIR; the config is
    validated here (paths are checked on the cluster), so a typo fails before anything is submitted.

    Raises:
        ConfigError: the config or an override is invalid.
    """
    from regionvit_video.config.load import config_from_args, parse_args

    if "OUTPUT_DIR" not in run_net_args[2:]:
        run_net_args = [*run_net_args, "OUTPUT_DIR", str(Path(job_dir).resolve())]
    config_from_args(parse_args(run_net_args), check_paths=False)
    return run_net_args


class Trainer:
    """The submitted callable: one per task; ``checkpoint()`` makes the job requeue itself and resume."""

    def __init__(self, run_net_args: list[str]):
        self.run_net_args = run_net_args
        self.repo = str(Path(__file__).resolve().parent)  # where run_net.py is, on the cluster's shared filesystem

    def __call__(self) -> int:
        import submitit

        sys.path.insert(0, self.repo)
        import run_net
        from regionvit_video.engine.preemption import PREEMPTED_EXIT_CODE

        env = submitit.JobEnvironment()
        os.environ.update(
            RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks), LOCAL_RANK=str(env.local_rank),
            MASTER_ADDR=env.hostnames[0], MASTER_PORT=str(20000 + int(str(env.job_id).split("_")[0]) % 20000))
        status = run_net.main(self.run_net_args)
        if status == PREEMPTED_EXIT_CODE:
            # The checkpoint is written and every rank agreed to stop: requeue through submitit's own handler
            # (on global rank 0 it calls checkpoint() below, requeues the job and exits; elsewhere it returns).
            from regionvit_video.engine.preemption import requeue_with_submitit

            requeue_with_submitit()
        elif status:
            raise RuntimeError(f"run_net.py exited with status {status} (see the log in the output folder)")
        return status

    def checkpoint(self):
        """Called by submitit on preemption or timeout: the same job again; auto-resume continues it."""
        import submitit

        return submitit.helpers.DelayedSubmission(Trainer(self.run_net_args))


def build_executor(args: argparse.Namespace):
    import submitit

    folder = Path(args.job_dir) / "submitit"  # <job id>_<task>_log.out / .err
    if args.local:
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=args.timeout, tasks_per_node=args.ngpus, nodes=1,
                                   gpus_per_node=min(args.ngpus, _visible_gpus()))
        return executor
    executor = submitit.AutoExecutor(folder=folder, slurm_max_num_timeout=30)
    extra = {k: v for k, v in (("account", args.account), ("qos", args.qos)) if v}
    params = dict(gpus_per_node=args.ngpus, tasks_per_node=args.ngpus, cpus_per_task=args.cpus_per_task,
                  nodes=args.nodes, timeout_min=args.timeout, name=args.name, slurm_signal_delay_s=args.signal_delay,
                  slurm_additional_parameters=extra)
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.constraint:
        params["slurm_constraint"] = args.constraint
    executor.update_parameters(**params)
    return executor


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def main(argv: list[str] | None = None) -> int:
    from regionvit_video.config.load import ConfigError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args, run_net_args = parse_args(argv)
    try:
        run_net_args = _checked_args(run_net_args, args.job_dir)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    executor = build_executor(args)
    job = executor.submit(Trainer(run_net_args))
    print(f"submitted job {job.job_id}: {args.nodes} node(s) x {args.ngpus} task(s), output in "
          f"{run_net_args[run_net_args.index('OUTPUT_DIR') + 1]}")
    print(f"  logs: {job.paths.stdout} and {job.paths.stderr} (%t: the task number)")
    if not args.local:
        return 0
    try:
        statuses = job.results()  # one per task
    except Exception as e:  # noqa: BLE001  (the job's own error, already in its log)
        print(f"job {job.job_id} failed: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e) else ''}",
              file=sys.stderr)
        return 1
    print(f"job {job.job_id} finished: task statuses {statuses}")
    return max(int(s or 0) for s in statuses)


if __name__ == "__main__":
    sys.exit(main())
