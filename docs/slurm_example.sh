#!/bin/bash
# Multi-node training of an iris_nb Reverter with SLURM + torchrun.
#
# One SLURM task per node; on each node torchrun starts one training process per GPU.
# All processes rendezvous at the first node of the allocation, so no shared hostfile, MPI
# or fixed port list is needed.  Every rank runs `iris-nb train --config run.yaml`, the same
# command that `iris_nb.train.launch(...)` runs from a notebook and that a single machine
# runs from a shell.
#
# Prepare once (login node):
#   python -c "from iris_nb.train.run import RunConfig; RunConfig(dataset='/scratch/$USER/cmz.zarr', grid='SEDIGISM', checkpoint_dir='/scratch/$USER/runs/sedigism-0').to_yaml('run.yaml')"
# Submit:
#   sbatch docs/slurm_example.sh run.yaml
# Resubmitting the same script after a time-out continues from <checkpoint_dir>/checkpoint.pt.
#
# Adapt the #SBATCH lines (partition, account, GPUs per node, time) to your cluster.  The
# dataset store and checkpoint_dir must be readable/writable from every node (checkpoints
# are written by rank 0 only).

#SBATCH --job-name=iris-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one torchrun launcher per node
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=32           # data loading threads for 4 ranks
#SBATCH --time=02:00:00
#SBATCH --output=iris-train-%j.out

set -euo pipefail

CONFIG=${1:-run.yaml}
GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-4}

# Rendezvous at the first node of the allocation, on a port derived from the job id so that
# two jobs sharing a node do not collide.
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))
export MASTER_ADDR MASTER_PORT

# Optional: activate the environment that has iris_nb installed.
# source /path/to/venv/bin/activate   (or: conda activate iris_nb)

# Threads per rank for CPU-side work (data loading, noise): the node's CPUs shared by its ranks.
export OMP_NUM_THREADS=$(( ${SLURM_CPUS_PER_TASK:-8} / GPUS_PER_NODE ))
# export NCCL_DEBUG=WARN            # uncomment to debug NCCL start-up
# export NCCL_SOCKET_IFNAME=ib0     # pick the fast interconnect if NCCL chooses a wrong one

echo "iris_nb training: $SLURM_NNODES nodes x $GPUS_PER_NODE GPUs, rendezvous ${MASTER_ADDR}:${MASTER_PORT}"

# srun starts one torchrun per node; each torchrun starts GPUS_PER_NODE ranks.  The c10d
# rendezvous lets torchrun assign node ranks itself, so the same line works on every node.
srun --kill-on-bad-exit=1 python -m torch.distributed.run \
    --nnodes="$SLURM_NNODES" \
    --nproc-per-node="$GPUS_PER_NODE" \
    --rdzv-id="$SLURM_JOB_ID" \
    --rdzv-backend=c10d \
    --rdzv-endpoint="${MASTER_ADDR}:${MASTER_PORT}" \
    --max-restarts=0 \
    -m iris_nb.cli train --config "$CONFIG" --device cuda

# Afterwards, in a notebook:
#   from iris_nb.train.launch import load_run_result
#   result = load_run_result("/scratch/$USER/runs/sedigism-0")   # model + loss histories
