"""beanlib: the beans LeNet vs Inception-v3 study as repeatable, distributed batch jobs."""

__version__ = "0.1.0"
