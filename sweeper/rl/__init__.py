"""The RLVR job: policy, rollout, tasks, advantages, losses, metrics, job loop (torch)."""
