"""Temperature scaling (Guo et al. 2017): one scalar T > 0 divides the logits, fitted by
minimising the negative log-likelihood on a validation split (never on the split that is then
evaluated). It changes no prediction (the arg-max is unchanged), only the confidences.

Probabilities stand in for logits: softmax(log p / T) = softmax(z / T) for the logits z that
gave p (they differ from log p by a constant per example), so averaged ensemble or
test-time-augmentation probabilities can be calibrated the same way.
"""
import numpy as np
from scipy import optimize

from research.errors import ConfigError


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
  """softmax(log(probs) / temperature), rows summing to 1."""
  z = np.log(np.clip(np.asarray(probs, np.float64), 1e-300, 1.0)) / temperature
  z -= z.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-300, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
  """The T in [0.05, 20] minimising the NLL of `scaled(probs, T)` on (probs, labels)."""
  if len(labels) < 2:
    raise ConfigError('temperature scaling needs a validation split with examples')
  result = optimize.minimize_scalar(lambda log_t: nll(scaled(probs, np.exp(log_t)), labels),
                                    bounds=(np.log(0.05), np.log(20.0)), method='bounded',
                                    options={'xatol': 1e-5})
  return float(np.exp(result.x))
