"""Training runs: run directories, checkpoints, evaluation."""

from fcnet.training.evaluate import evaluate_run, predict_files
from fcnet.training.population_run import train_population
from fcnet.training.run import train_run
from fcnet.training.rundir import read_run_config

__all__ = ["train_run", "train_population", "evaluate_run", "predict_files", "read_run_config"]
