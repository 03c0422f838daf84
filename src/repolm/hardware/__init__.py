"""Hardware below the stages: what the machine has (devices, memory, precision) and a
monitor of its use while a job runs."""
