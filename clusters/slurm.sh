#!/bin/bash
# slurm: start a Ray cluster on a SLURM allocation (head on the first node, one worker per
# other node) and run a sweep on it, or just print its address.
#
#   sbatch clusters/slurm.sh recipes/nsr_optuna.yaml   # run the sweep, then release the nodes
#   sbatch clusters/slurm.sh                           # no recipe: print the address, keep the
#                                                      # cluster up until the time limit
#   sweeper validate clusters/slurm.sh                 # light check of this script
#
# Binding: one Ray node per SLURM node (one task per node); each node gets the task's CPUs
# (--cpus-per-task) and the node's GPUs (--gpus-per-node), and Ray is told exactly those counts
# so it never schedules beyond the allocation. The head runs the controller and no jobs when
# HEAD_RUNS_JOBS=0. Token auth (Ray 2.60): a fresh token per allocation, passed to every srun
# step through the environment; only without a recipe is it written, to a 0600 file next to the
# cluster file, so you can connect from a login node.
# Sweep dirs must be on a file system every node sees (the submit dir by default) or s3://.
#SBATCH --job-name=sweeper
#SBATCH --nodes=3
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --gpus-per-node=4
#SBATCH --mem=0
#SBATCH --time=04:00:00
#SBATCH --output=sweeper-%j.out

set -euo pipefail

RECIPE="${1:-}"
PORT="${RAY_PORT:-6379}"
HEAD_RUNS_JOBS="${HEAD_RUNS_JOBS:-1}"
GPUS_PER_NODE="${SLURM_GPUS_PER_NODE:-0}"
GPUS_PER_NODE="${GPUS_PER_NODE##*:}"       # "a100:4" -> 4
CPUS="${SLURM_CPUS_PER_TASK:-1}"

# Activate the environment that has sweeper (and the same Ray version) on every node.
# source /path/to/venv/bin/activate

export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN="$(python -c 'import secrets; print(secrets.token_hex(32))')"
export RAY_AUTH_TOKEN

mapfile -t NODES < <(scontrol show hostnames "$SLURM_JOB_NODELIST")
HEAD="${NODES[0]}"
HEAD_IP="$(srun --nodes=1 --ntasks=1 -w "$HEAD" hostname --ip-address | awk '{print $1}')"
ADDRESS="$HEAD_IP:$PORT"

HEAD_CPUS="$CPUS"; HEAD_GPUS="$GPUS_PER_NODE"
if [ "$HEAD_RUNS_JOBS" = "0" ]; then HEAD_CPUS=0; HEAD_GPUS=0; fi

echo "starting Ray head on $HEAD ($ADDRESS)"
srun --nodes=1 --ntasks=1 -w "$HEAD" \
  ray start --head --node-ip-address="$HEAD_IP" --port="$PORT" \
  --num-cpus="$HEAD_CPUS" --num-gpus="$HEAD_GPUS" --dashboard-host=0.0.0.0 --block &
sleep 15

for node in "${NODES[@]:1}"; do
  echo "starting Ray worker on $node"
  srun --nodes=1 --ntasks=1 -w "$node" \
    ray start --address="$ADDRESS" --num-cpus="$CPUS" --num-gpus="$GPUS_PER_NODE" --block &
done
sleep 15

# A sweeper cluster file for this allocation: the GCS address (the driver runs on the head).
CLUSTER_FILE="$SLURM_SUBMIT_DIR/slurm-$SLURM_JOB_ID.cluster.yaml"
cat > "$CLUSTER_FILE" <<YAML
name: slurm-$SLURM_JOB_ID
kind: ray
address: $ADDRESS
storage: $SLURM_SUBMIT_DIR/sweeps
resources: {num_cpus: 4, num_gpus: 1}
YAML

if [ -n "$RECIPE" ]; then
  srun --overlap --nodes=1 --ntasks=1 -w "$HEAD" \
    sweeper run "$RECIPE" --cluster "$CLUSTER_FILE"
else
  echo "Ray cluster up: address $ADDRESS, dashboard http://$HEAD_IP:8265"
  TOKEN_FILE="$SLURM_SUBMIT_DIR/slurm-$SLURM_JOB_ID.token"
  (umask 077 && printf '%s' "$RAY_AUTH_TOKEN" > "$TOKEN_FILE")
  echo "cluster file: $CLUSTER_FILE"
  echo "connect: export RAY_AUTH_MODE=token RAY_AUTH_TOKEN=\$(cat $TOKEN_FILE)"
  echo "         sweeper run RECIPE --cluster $CLUSTER_FILE   # from a node that can reach $ADDRESS"
  wait
fi
