"""Trainers, schedules, losses, checkpoints, logging and distribution for the FQ-GAN models."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; training stopped and the last good checkpoint is kept."""


class TrainingConfigError(ValueError):
    """Settings that cannot work together, found once the data and devices are known."""
