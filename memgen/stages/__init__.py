"""Beam stages of memorize: thin composite PTransforms around the pure core modules."""

from memgen.stages.coders import register

register()  # before any stage builds a pipeline: shuffled NamedTuples travel as fields


def only(values):
    """The single value of a CoGroupByKey side that holds exactly one."""
    (value,) = values
    return value
