"""Training runs: run directories, checkpoints, evaluation."""

from fcnet.training.evaluate import evaluate_run, load_run_model, predict_files
from fcnet.training.population_run import train_population
from fcnet.training.run import read_run_config, train_run

__all__ = ["train_run", "train_population", "evaluate_run", "predict_files", "load_run_model",
           "read_run_config"]
