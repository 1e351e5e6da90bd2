"""Shard discovery: input URLs (brace ranges, globs, directories) -> sorted Shards.

Everything goes through fsspec, so local paths, memory://, https:// and (with the
cloud extra) s3:// and gs:// behave the same. One shard is one unit of work.
"""

from __future__ import annotations

from memgen.shards.braces import MAX_EXPANDED, NoInputError, expand
from memgen.shards.discovery import SILENT_ASKS, discover, input_folder_holding
from memgen.shards.entries import FolderEntries, counted, folder_entries
from memgen.shards.hive import hive_partitions
from memgen.shards.names import (
    FOLDER_METADATA,
    IMAGE_SUFFIXES,
    OTHER_IMAGE_SUFFIXES,
    PARQUET_SUFFIXES,
    SHARD_SUFFIXES,
    SIDECARS,
    TAR_COMPRESSION,
    TAR_SUFFIXES,
    TFRECORD_COMPRESSION,
    TFRECORD_SUFFIXES,
    WARC_SUFFIXES,
    ZIP_SUFFIXES,
    compression,
    discovered_kinds,
    is_shard_name,
    shard_kind,
    shard_suffix,
    split_source,
)
from memgen.shards.probe import http_answer
from memgen.shards.store import HTTP_TIMEOUT, open_input, storage_options, url_fs
from memgen.shards.versions import file_digest, file_version, listing_digest
from memgen.shards.walk import IMAGES, hidden

__all__ = ["FOLDER_METADATA", "HTTP_TIMEOUT", "IMAGES", "IMAGE_SUFFIXES", "MAX_EXPANDED",
           "OTHER_IMAGE_SUFFIXES", "PARQUET_SUFFIXES", "SHARD_SUFFIXES", "SIDECARS", "SILENT_ASKS",
           "TAR_COMPRESSION", "TAR_SUFFIXES", "TFRECORD_COMPRESSION", "TFRECORD_SUFFIXES", "WARC_SUFFIXES",
           "ZIP_SUFFIXES", "FolderEntries", "NoInputError", "compression", "counted", "discover",
           "discovered_kinds", "expand", "file_digest", "file_version", "folder_entries", "hidden",
           "hive_partitions", "http_answer", "input_folder_holding", "is_shard_name", "listing_digest",
           "open_input", "shard_kind", "shard_suffix", "split_source", "storage_options", "url_fs"]
