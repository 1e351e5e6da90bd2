"""A Parquet batch's rows as Python values, read laxly where Arrow cannot give them (strings that are not
UTF-8, nanosecond times, dates beyond Python's)."""

from __future__ import annotations

import pyarrow as pa

from memgen.readers.fields import utf8_or_guessed


def batch_rows(batch: pa.RecordBatch) -> list[dict]:
    """The batch's rows; where Arrow cannot give a value to Python, read as text: strings that
    are not UTF-8, which lax writers store, as text files are (memgen.text), and nanosecond
    times, which Python's hold to the microsecond ("2023-11-14 22:13:20.123456789": pyarrow
    gives them only as pandas' Timestamps). Either made their whole row group a corrupt_shard
    reject, its images with it."""
    # a nanosecond time is text in every batch: pyarrow gives one without nanoseconds as a
    # datetime ("... 22:13:20+00:00"), and its column's text followed its batch's other rows
    if not any(map(_holds_nanoseconds, batch.schema.types)):
        try:
            return batch.to_pylist()
        except (ValueError, OverflowError):  # UnicodeDecodeError, a year > 9999
            pass
    columns = {name: _column_values(batch.column(i)) for i, name in enumerate(batch.schema.names)}
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _column_values(column: pa.Array) -> list:
    """A column's values as batch_rows gives them: only a column that needs it read laxly (decoding
    strings in Python costs a call a value)."""
    if not _holds_nanoseconds(column.type):
        try:
            return column.to_pylist()
        except (ValueError, OverflowError):
            pass
    return _lax_values(column)


def _holds_nanoseconds(t: pa.DataType) -> bool:
    """Whether `t` is or holds (in lists, maps, structs, dictionaries) a nanosecond time."""
    if pa.types.is_timestamp(t) or pa.types.is_time64(t) or pa.types.is_duration(t):
        return t.unit == "ns"
    if pa.types.is_dictionary(t):
        return _holds_nanoseconds(t.value_type)
    if pa.types.is_map(t):
        return _holds_nanoseconds(t.key_type) or _holds_nanoseconds(t.item_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _holds_nanoseconds(t.value_type)
    return pa.types.is_struct(t) and any(_holds_nanoseconds(f.type) for f in t)


def _lax_values(column: pa.Array) -> list:
    """A column's values as to_pylist gives them, strings read from their bytes and nanosecond
    times as text, however they are nested (lists, structs, maps; dictionary-encoded too): a
    map of EXIF tags or a Hugging Face image's path in latin-1 made the whole row group a
    corrupt_shard reject. A cell with a date or time beyond Python's (year 10000 on: epoch
    milliseconds written with a unit of seconds) has every date and time as text: pyarrow
    raised OverflowError, which failed the run. Only that cell: its batch's other rows are as
    in any other batch (the same time was '... 20.123000+00:00' in one, '... 20.123Z' here)."""
    lax = _lax_type(column.type)
    try:
        return _values_as(column, lax)
    except OverflowError:
        timed = _texts_decoded(column.cast(_lax_type(column.type, times=True)).to_pylist())
        return [_cell_value(column.slice(i, 1), lax, text) for i, text in enumerate(timed)]


def _values_as(column: pa.Array, lax: pa.DataType) -> list:
    if lax == column.type:  # no strings: bytes are binary (a caption column's, decoded as a .txt)
        return column.to_pylist()
    return _texts_decoded(column.cast(lax).to_pylist())


def _cell_value(cell: pa.Array, lax: pa.DataType, timed: object) -> object:
    """One cell's value as _lax_values gives it, or `timed` (its dates and times as text)
    where one is beyond Python's."""
    try:
        return _values_as(cell, lax)[0]
    except OverflowError:
        return timed


def _lax_type(t: pa.DataType, times: bool = False) -> pa.DataType:
    """`t` with its strings (dictionary-encoded ones too) as binary, which Arrow does not
    validate as UTF-8, and its nanosecond times (`times`: all its dates and times) as text."""
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.large_binary()
    if (pa.types.is_timestamp(t) or pa.types.is_time64(t) or pa.types.is_duration(t)) and t.unit == "ns":
        return pa.string()
    if times and pa.types.is_temporal(t):
        return pa.string()
    if pa.types.is_dictionary(t):
        return _lax_type(t.value_type, times)
    if pa.types.is_map(t):
        return pa.map_(_lax_type(t.key_type, times), _lax_type(t.item_type, times))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        item = t.value_field.with_type(_lax_type(t.value_type, times))
        if pa.types.is_fixed_size_list(t):
            return pa.list_(item, t.list_size)
        return pa.large_list(item) if pa.types.is_large_list(t) else pa.list_(item)
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_lax_type(f.type, times)) for f in t])
    return t


def _texts_decoded(value: object) -> object:
    """`value` with its bytes (strings, read as binary) as text."""
    if isinstance(value, bytes):
        return utf8_or_guessed(value)
    if isinstance(value, list):
        return [_texts_decoded(v) for v in value]
    if isinstance(value, tuple):  # a map's (key, item) pairs
        return tuple(_texts_decoded(v) for v in value)
    if isinstance(value, dict):
        return {k: _texts_decoded(v) for k, v in value.items()}
    return value
