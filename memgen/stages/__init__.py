"""Beam stages of memorize: thin composite PTransforms around the pure core modules."""


def only(values):
    """The single value of a CoGroupByKey side that holds exactly one."""
    (value,) = values
    return value
