"""Beam stages of memorize, sample and evaluate: thin composite PTransforms around the pure core modules."""

from collections.abc import Iterable
from typing import TypeVar

from memgen.stages.coders import register

T = TypeVar("T")

register()  # before any stage builds a pipeline: shuffled NamedTuples travel as fields


def only(values: Iterable[T]) -> T:
    """The single value of a CoGroupByKey side that holds exactly one."""
    (value,) = values
    return value
