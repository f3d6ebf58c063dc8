"""ConvLab's library, grouped by stage: data/, models/, kernels/, training/ (the shared loop),
tasks/ (one module per kind of experiment), tools/.

Nothing in here imports `experiments/`.
"""
