"""What runs: the supervisors' state files, health, process facts and status rows, for the API and operators."""
