"""Adversarial attacks for evaluation and adversarial training: FGSM, PGD (L-inf, L2,
restarts, targeted) and APGD-CE, with the projections, random points and checks they share.

A model enters as `logits_fn(images) -> logits (N, K)` on pixels in `pixel_range` before
normalisation, built by the caller in eval mode, e.g.
`logits_fn = lambda x: model.apply(variables, normalize(x), train=False)`.
Conventions: research/attacks/common.py. Run attacks under jax.jit (robust_accuracy does):
called eagerly, XLA compiles every operation on its own (seconds per call). Tests:
tests/test_attacks.py, test_apgd.py, test_attacks_checks.py, test_attacks_mnist.py.
"""
from research.attacks.apgd import apgd_ce, apgd_checkpoints
from research.attacks.common import (NORMS, attack_objective, check_attack_arguments,
                                     l2_norms, per_example_cross_entropy, project, project_l2,
                                     project_linf, random_noise, random_start, steepest_ascent)
from research.attacks.evaluate import robust_accuracy, robust_correct
from research.attacks.pgd import fgsm, pgd

__all__ = ['NORMS', 'apgd_ce', 'apgd_checkpoints', 'attack_objective', 'check_attack_arguments',
           'fgsm', 'l2_norms', 'per_example_cross_entropy', 'pgd', 'project', 'project_l2',
           'project_linf', 'random_noise', 'random_start', 'robust_accuracy', 'robust_correct',
           'steepest_ascent']
