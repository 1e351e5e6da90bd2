"""Remote storage for real: memorize over s3:// and http:// on loopback servers.

s3: moto's S3-compatible server (ThreadedMotoServer) on 127.0.0.1; memorize reads its
shards from a bucket and writes the memory to another. The endpoint and credentials
come only from the standard AWS environment variables (AWS_ENDPOINT_URL_S3,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), and the secret must appear nowhere: not in
stdout, stderr, logs (DEBUG, every logger), the manifest or any written object.
http: a local http.server serves a folder of tar shards; a missing URL is a reject.
The memory's content must equal that of the same shards read from local disk.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gzip
import http.client
import http.server
import io
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
import zstandard
from moto.server import ThreadedMotoServer
from PIL import Image
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from memgen import transfer
from memgen.memory import open_table, read_manifest
from memgen.pipelines.cli import main
from memgen.shards import discover, listing_digest
from shardkit import encode, jpeg, sample, write_mds, write_parquet, write_tar

SECRET = "sEcReT-aws-key-do-not-log-4242"
# what a memory holds independently of where its shards were read from
CONTENT = ["image_id", "phash", "dhash", "width", "height", "format", "n_bytes", "image", "caption",
           "copies", "exact_copies"]


def write_shards(folder: Path) -> Path:
    """3 shards: unique images, exact copies across shards, one re-encoded near copy, a reject."""
    folder.mkdir(parents=True, exist_ok=True)
    write_tar(folder / "shard-000.tar", [sample(f"a{i}", jpeg(i), f"photo {i}") for i in range(6)])
    write_tar(folder / "shard-001.tar", [
        *(sample(f"b{i}", jpeg(i), f"copy {i}") for i in range(3)),  # exact copies of shard 0
        sample("b9", jpeg(0, quality=60), "near copy"),  # same picture, other bytes
        sample("bx", b"", "empty record"),
    ])
    write_tar(folder / "shard-002.tar", [sample(f"c{i}", jpeg(100 + i)) for i in range(4)])
    return folder


def content(memory: str) -> dict[str, list]:
    """Images (content columns + record key), duplicates and rejects, in a stable order."""
    images = open_table(memory, "images").to_table().to_pylist()
    for row in images:
        row["key"] = row.pop("source").rsplit("/", 1)[-1]
    keyed = [{**{c: r[c] for c in CONTENT}, "key": r["key"]} for r in images]
    dups = [{k: v for k, v in r.items() if k != "source"} | {"key": r["source"].rsplit("/", 1)[-1]}
            for r in open_table(memory, "duplicates").to_table().to_pylist()]
    rejects = [{k: v for k, v in r.items() if k != "source"} | {"key": r["source"].rsplit("/", 1)[-1]}
               for r in open_table(memory, "rejects").to_table().to_pylist()]
    return {name: sorted(rows, key=lambda r: r["key"])
            for name, rows in (("images", keyed), ("duplicates", dups), ("rejects", rejects))}


@pytest.fixture(autouse=True)
def resume_at_once(monkeypatch):
    """A cut http(s) body is asked for again at once, not 1, 2, 4, 8 s later."""
    monkeypatch.setattr(transfer, "RESUME_WAIT", 0.0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return write_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture(scope="module")
def local_reference(shards, tmp_path_factory) -> dict:
    memory = str(tmp_path_factory.mktemp("local") / "memory")
    assert main(["memorize", str(shards / "*.tar"), "--memory", memory]) == 0
    return {"content": content(memory), "counts": read_manifest(memory)["counts"]}


@pytest.fixture(scope="module")
def s3_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, shards) -> s3fs.S3FileSystem:
    """The standard AWS variables point every S3 client (s3fs, boto) at the loopback server."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "memgen-test-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()  # instances remember the endpoint they were made with
    fs = fsspec.filesystem("s3")
    for bucket in ("inputs", "memories"):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
    fs.put(str(shards / "*.tar"), "inputs/shards/")
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()


def test_memorize_s3_to_s3_matches_local_and_never_leaks_the_secret(s3, local_reference, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    memory = "s3://memories/run1"
    assert main(["memorize", "s3://inputs/shards/shard-*.tar", "--memory", memory]) == 0

    manifest = read_manifest(memory)
    assert manifest["shards"] == 3 and manifest["balanced"]
    assert manifest["counts"] == local_reference["counts"]
    assert manifest["counts"]["duplicates_exact"] == 3 and manifest["counts"]["rejects"] == 1
    got = content(memory)
    assert got == local_reference["content"]
    assert all(r["source"].startswith("s3://inputs/shards/shard-00")
               for r in open_table(memory, "images").to_table(columns=["source"]).to_pylist())

    out, err = capfd.readouterr()
    written = b"".join(s3.cat(p) for p in s3.find("memories/run1"))
    assert caplog.records, "logs were not captured"
    for where, text in (("stdout", out), ("stderr", err), ("logs", caplog.text),
                        ("manifest", str(manifest)), ("objects", written.decode("latin-1"))):
        assert SECRET not in text, f"the AWS secret appears in {where}"


def test_a_dataflow_dry_run_builds_validates_and_prints_reaching_only_the_bucket(s3, s3_server, monkeypatch,
                                                                                capsys):
    """The pipeline graph for DataflowRunner, checked without Google Cloud: only the storage
    it lists (the input shards, the output bucket) is asked."""
    connect = socket.socket.connect
    storage = tuple(s3_server.removeprefix("http://").split(":"))

    def storage_only(sock, address):
        assert (address[0], str(address[1])) == storage, f"dry run tried to connect to {address}"
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", storage_only)
    assert main(["memorize", "s3://inputs/shards/*.tar", "--memory", "s3://memories/dry", "--dry_run",
                 "--runner=DataflowRunner", "--project=memgen-test", "--region=europe-west4",
                 "--temp_location=gs://memgen-test-bucket/tmp"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "dry run: DataflowRunner, pipeline built and validated, not run"
    stages = [line.strip() for line in printed if line.startswith("  ") and not line.startswith("    ")]
    assert stages == ["Shards", "ReadShards", "Fingerprint", "ExactDedup", "NearDedup", "AllRejects",
                      "WriteMemory"]
    assert "    Materialize" in printed and "    WriteManifest" in printed
    assert not s3.exists("memories/dry")


def test_s3_memory_that_is_finished_is_refused_to_another_command(s3, capfd):
    memory = "s3://memories/run2"
    assert main(["memorize", "s3://inputs/shards/shard-002.tar", "--memory", memory]) == 0
    capfd.readouterr()
    assert main(["memorize", "s3://inputs/shards/shard-00{1,2}.tar", "--memory", memory]) == 2
    assert "already holds a finished memory" in capfd.readouterr().err
    assert main(["memorize", "s3://inputs/shards/shard-002.tar", "--memory", memory]) == 0  # the same one
    assert "already holds the finished output of this command over the same 1 shards: nothing to run" in \
        capfd.readouterr().err


def test_an_object_rewritten_under_its_name_lists_otherwise_named_or_globbed(s3):
    """A retry's listing digest tells an object's versions apart by its ETag, the same from a
    glob's listing as from a request for the object named."""
    named, globbed = "s3://inputs/shards/shard-002.tar", "s3://inputs/shards/shard-00[2].tar"
    s3fs.S3FileSystem.clear_instance_cache()  # no listing cached: the named object is asked for
    then = listing_digest(discover([named]))
    assert listing_digest(discover([globbed])) == then
    s3.pipe("inputs/shards/shard-002.tar", s3.cat("inputs/shards/shard-001.tar"))
    s3fs.S3FileSystem.clear_instance_cache()
    assert listing_digest(discover([named])) != then
    assert listing_digest(discover([globbed])) == listing_digest(discover([named]))


def test_a_bucket_that_does_not_exist_is_not_created(s3, capsys):
    assert main(["memorize", "s3://inputs/shards/shard-002.tar", "--memory", "s3://no-such-bucket/m"]) == 2
    err = capsys.readouterr().err
    assert "cannot be written: the bucket no-such-bucket does not exist (memgen does not create" in err
    assert not s3.exists("no-such-bucket")
    assert main(["memorize", "s3://inputs/shards/shard-002.tar", "--memory", "s3://no-such-bucket/m",
                 "--dry_run"]) == 2  # a dry run says so too
    assert "the bucket no-such-bucket does not exist" in capsys.readouterr().err

def test_inputs_and_memories_in_a_bucket_that_does_not_exist_say_so(s3, tmp_path, capsys):
    """A typo in an input's bucket said only "no input matched", as a wrong file name does;
    a bucket that exists but holds no match says no more than that."""
    for inputs, said in ((["s3://no-such-bucket/shards/shard-001.tar"],
                          " (the bucket no-such-bucket does not exist)"),
                         (["s3://inputs/none/*.tar", "s3://gone-a/x.tar", "s3://gone-b/shards/*.tar"],
                          " (the buckets gone-a, gone-b do not exist)"),
                         (["s3://inputs/nothing-here/*.tar"], "")):
        assert main(["memorize", *inputs, "--memory", str(tmp_path / "m")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert err.strip().endswith(f"no input matched: {' '.join(inputs)}{said}"), err
    assert not s3.exists("no-such-bucket") and not s3.exists("gone-a")
    out = str(tmp_path / "s")
    assert main(["sample", "--memory", "s3://no-such-bucket/m", "--n", "2", "--out", out]) == 2
    assert "s3://no-such-bucket/m is not a finished memory (the bucket no-such-bucket does not exist)" in (
        capsys.readouterr().err)
    assert main(["sample", "--memory", "s3://inputs/m", "--n", "2", "--out", out]) == 2
    assert "s3://inputs/m is not a finished memory (nothing is there)" in capsys.readouterr().err



def test_an_empty_folder_made_in_an_s3_console_is_an_empty_output(s3):
    s3.call_s3("put_object", Bucket="memories", Key="from-console/", Body=b"")  # "Create folder"
    s3.invalidate_cache()
    memory = "s3://memories/from-console"
    assert main(["memorize", "s3://inputs/shards/shard-002.tar", "--memory", memory]) == 0


def test_a_memory_inside_an_s3_input_is_refused_and_a_sibling_is_not(s3, capsys):
    for given in ("s3://inputs/shards", "s3://inputs/shards/*"):
        assert main(["memorize", given, "--memory", "s3://inputs/shards/m", "--dry_run"]) == 2
        assert "is inside the input" in capsys.readouterr().err
    for other in ("s3://inputs/shards-m", "s3://inputs/m"):  # beside it, or outside the glob's matches
        assert main(["memorize", "s3://inputs/shards/shard-*.tar", "--memory", other, "--dry_run"]) == 0


def test_missing_credentials_are_one_line(s3, monkeypatch, tmp_path, capsys):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3fs.S3FileSystem.clear_instance_cache()
    assert main(["memorize", "s3://inputs/shards/shard-002.tar", "--memory", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NoCredentialsError" in err, err
    assert err.endswith("(listing s3://inputs/shards/shard-002.tar)\n"), err  # which input it was
    # a memory or a calibration file read from s3: the error named neither
    memory, read_memory = "s3://memories/m", "(reading s3://memories/m/manifest.json)"
    out = str(tmp_path / "out")
    write_tar(tmp_path / "in.tar", [sample("k0", jpeg(0))])
    for command, named in ((["sample", "--memory", memory, "--out", out, "--n", "2"], read_memory),
                           (["memorize", str(tmp_path / "in.tar"), "--memory", out, "--known", memory],
                            read_memory),
                           (["evaluate", "--memory", memory, "--out", out], read_memory),
                           (["evaluate", "--memory", str(tmp_path / "m"), "--out", out,
                             "--calibration", "s3://inputs/labels.csv"], "(--calibration s3://inputs/labels.csv)")):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "NoCredentialsError" in err and err.endswith(f"{named}\n"), err


@pytest.fixture
def refusing_s3(monkeypatch):
    """An S3 server that refuses every request (moto with no unauthenticated action allowed
    and credentials it does not know): what a bucket without access gives."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while socket.socket().connect_ex(("127.0.0.1", port)) and time.monotonic() < deadline:
        time.sleep(0.2)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unknown-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    s3fs.S3FileSystem.clear_instance_cache()
    yield
    server.terminate()
    server.wait()
    s3fs.S3FileSystem.clear_instance_cache()


def test_storage_that_refuses_access_is_one_line(refusing_s3, shards, tmp_path, capsys):
    for args in (["s3://locked/shards/*.tar", "--memory", str(tmp_path / "m1")],  # a glob of inputs
                 ["s3://locked/shards/shard-000.tar", "--memory", str(tmp_path / "m2")],  # not "no input"
                 [str(shards / "shard-000.tar"), "--memory", "s3://locked/m"]):  # the output
        assert main(["memorize", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert "PermissionError" in err and err.count("\n") == 0, err


@pytest.mark.parametrize("where", ["s3", "local"])
def test_output_names_with_glob_characters_are_taken_literally(where, s3, local_reference, tmp_path):
    """'[1]' and '?' are legal in keys and file names; read as glob patterns they matched
    nothing (a sample of no parts) or another folder (a rerun clearing "b1" for "b[1]")."""
    local = fsspec.filesystem("file", auto_mkdir=True)
    fs, root = (s3, "memories/glob") if where == "s3" else (local, str(tmp_path))
    url = (lambda path: f"s3://{path}") if where == "s3" else (lambda path: path)
    fs.pipe(f"{root}/b1/images/part-000009.parquet", b"not memgen's: must stay")
    fs.pipe(f"{root}/b[1]/.memgen-run", b"memorize")  # a killed run of memorize left these
    fs.pipe(f"{root}/b[1]/images/part-000009.parquet", b"half a part")
    memory = url(f"{root}/b[1]")
    assert main(["memorize", "s3://inputs/shards/shard-*.tar", "--memory", memory]) == 0
    assert content(memory) == local_reference["content"]
    assert fs.cat(f"{root}/b1/images/part-000009.parquet") == b"not memgen's: must stay"
    out = url(f"{root}/s?1")
    assert main(["sample", "--memory", memory, "--n", "4", "--out", out]) == 0
    assert read_manifest(out)["counts"]["images"] == 4
    if where == "s3":  # what a browser shows, not downloads (it was binary/octet-stream)
        assert s3.info(f"{root}/s?1/contact_sheet.jpg")["ContentType"] == "image/jpeg"
    assert not [p for p in fs.find(root) if p.endswith(".tmp") or "/." in p.replace("/.memgen-run", "")]


def test_a_part_is_put_whole_or_not_at_all(s3, tmp_path, monkeypatch):
    """On an object store a part is written to a local file and put in one request (it was a PUT
    under a temporary name, a HEAD, a server-side copy and a DELETE); a failed write leaves
    nothing there, nor here."""
    import tempfile

    from memgen.memory import ParquetPart
    from memgen.schema import table_schema

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    asked: list[str] = []
    call = s3fs.S3FileSystem._call_s3

    async def counted(self, method, *args, **kwargs):
        asked.append(method)
        return await call(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)
    row = {name: None for name in table_schema("rejects").names} | {
        "shard": 0, "ordinal": 0, "source": "s", "stage": "read", "error_type": "x", "message": "m",
        "n_bytes": 0}
    url = "s3://memories/atomic/rejects/part-000000.parquet"
    with pytest.raises(RuntimeError), ParquetPart(url, table_schema("rejects")) as part:
        part.add(row)
        part._flush()  # the file is open and half written
        raise RuntimeError("a worker fails mid-part")
    assert asked == [] and not list(tmp_path.iterdir())
    with ParquetPart(url, table_schema("rejects")) as part:
        part.add(row)
    assert asked == ["put_object"] and not list(tmp_path.iterdir())
    assert s3.find("memories/atomic") == ["memories/atomic/rejects/part-000000.parquet"]


def test_a_report_on_an_object_store_keeps_its_content_type(s3):
    """s3fs takes the Content-Type from the local file's name: a report.html staged without its
    suffix was binary/octet-stream, which a browser downloads instead of showing."""
    from memgen.outputs import write_atomic

    write_atomic("s3://memories/typed/report.html", lambda f: f.write("<!DOCTYPE html><p>chat \u00e9t\u00e9"))
    assert s3.info("memories/typed/report.html")["ContentType"] == "text/html"
    assert s3.cat_file("memories/typed/report.html").decode() == "<!DOCTYPE html><p>chat \u00e9t\u00e9"


def test_files_staged_by_processes_that_died_are_deleted(tmp_path, monkeypatch):
    """A worker killed mid-part (or a command ended at once after Ctrl-C) left a part-sized
    file in TMPDIR, which no rerun removed."""
    import tempfile

    from memgen import outputs

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{outputs._staged_prefix()}{dead.pid}-abc.parquet"
    mine = tmp_path / f"{outputs._staged_prefix()}{os.getpid()}-def.parquet"
    elsewhere = tmp_path / f"{outputs.STAGED}another-host-{dead.pid}-ghi.parquet"  # a pid of another machine
    other = tmp_path / "memgen-not-staged"
    for path in (stale, mine, elsewhere, other):
        path.write_bytes(b"part")
    outputs._sweep_staged.cache_clear()
    outputs._sweep_staged()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, elsewhere.name, other.name])


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@contextlib.contextmanager
def serving(handler, **attributes) -> Iterator[str]:
    """An http.server on loopback for the block; yields its URL. `attributes`: the handler's
    self.server.NAME."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    for name, value in attributes.items():
        setattr(server, name, value)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


@pytest.fixture
def http_root(shards):
    with serving(functools.partial(_QuietHandler, directory=str(shards))) as url:
        yield url


def test_http_outputs_are_refused_and_a_memory_on_a_server_without_ranges_is_said(shards, tmp_path, capsys):
    """An http(s) output ended each job in a NotImplementedError traceback (and passed a dry
    run); a memory served without Range requests (Python's http.server), in a ValueError's."""
    memory = tmp_path / "site" / "mem"
    assert main(["memorize", str(shards / "shard-000.tar"), "--memory", str(memory)]) == 0
    with serving(functools.partial(_QuietHandler, directory=str(tmp_path / "site"))) as root:
        for argv in (["memorize", str(shards / "shard-000.tar"), "--memory", f"{root}/new"],
                     ["memorize", str(shards / "shard-000.tar"), "--memory", f"{root}/new", "--dry_run"],
                     ["sample", "--memory", str(memory), "--n", "1", "--out", f"{root}/s"],
                     ["evaluate", "--memory", str(memory), "--out", f"{root}/r", "--classifier", "caption"]):
            capsys.readouterr()
            assert main(argv) == 2
            assert "http(s) cannot be written (use a folder, s3:// or gs://)" in capsys.readouterr().err
        assert main(["sample", "--memory", f"{root}/mem", "--n", "1", "--out", str(tmp_path / "s")]) == 2
        err = capsys.readouterr().err
        assert "The HTTP server doesn't appear to support range requests" in err and err.count("\n") == 1
    requests: list[str] = []  # refused before it is asked anything: a silent one held it for minutes
    release = threading.Event()
    with serving(_SilentHandler, requests=requests, release=release) as root:
        try:
            assert main(["memorize", str(shards / "shard-000.tar"), "--memory", f"{root}/m"]) == 2
            assert main(["evaluate", "--memory", str(memory), "--out", f"{root}/r"]) == 2
        finally:
            release.set()
    assert requests == []


def test_memorize_http_shards_match_local(http_root, local_reference, tmp_path):
    memory = str(tmp_path / "memory")
    # a brace range over the shards plus one URL the server does not have (HTTP 404)
    assert main(["memorize", f"{http_root}/shard-{{000..002}}.tar", f"{http_root}/shard-404.tar",
                 "--memory", memory]) == 0
    manifest = read_manifest(memory)
    assert manifest["shards"] == 4 and manifest["balanced"]
    assert manifest["counts"]["rejects_by_reason"] == {"empty": 1, "missing": 1}
    got = content(memory)
    missing = [r for r in got["rejects"] if r["key"] == "shard-404.tar"]
    assert [r["stage"] for r in missing] == ["open"]
    got["rejects"] = [r for r in got["rejects"] if r["key"] != "shard-404.tar"]
    assert got == local_reference["content"]


@pytest.mark.parametrize("name", ["photos.zip", "crawl.warc.gz", "photos.tar.zst", "photos.arrow",
                                  "shard.00000.mds.zstd"])
def test_a_zip_or_warc_over_http_and_in_a_bucket_matches_the_local_one(s3, tmp_path, name):
    """A zip is read from its end (its central directory) and then member by member: over
    http it is copied to local disk first, as a Parquet is; in a bucket read in ranges. A
    WARC is streamed, as a tar; a .tar.zst decompressed as it streams; an Arrow IPC stream
    read a batch at a time as it arrives, an MDS shard a sample at a time."""
    folder = tmp_path / "served"
    folder.mkdir()
    images = [(f"p/{i}.jpg", jpeg(i)) for i in range(6)] + [("p/again.jpg", jpeg(2))]
    if name.endswith(".tar.zst"):
        write_tar(folder / name, [(member.removesuffix(".jpg"), {"jpg": data}) for member, data in images])
    elif name.endswith(".arrow"):
        table = pa.table({"key": [member for member, _ in images], "jpg": [data for _, data in images]})
        with pa.ipc.new_stream(folder / name, table.schema) as writer:
            writer.write_table(table, max_chunksize=2)
    elif name.endswith(".mds.zstd"):
        rows = [{"key": member, "jpg": data} for member, data in images]
        write_mds(tmp_path / "mds", {"key": "str", "jpg": "bytes"}, rows, compression="zstd")
        (tmp_path / "mds" / name).rename(folder / name)
    elif name.endswith(".zip"):
        with zipfile.ZipFile(folder / name, "w") as archive:
            for member, data in images:
                archive.writestr(member, data)
    else:
        with open(folder / name, "wb") as out:
            writer = WARCWriter(out, gzip=True)
            http = StatusAndHeaders("200 OK", [("Content-Type", "image/jpeg")], protocol="HTTP/1.1")
            for member, data in images:
                writer.write_record(writer.create_warc_record(f"http://site/{member}", "response",
                                                              payload=io.BytesIO(data), http_headers=http))
    s3.put(str(folder / name), f"inputs/archives/{name}")
    assert main(["memorize", str(folder / name), "--memory", str(tmp_path / "local")]) == 0
    reference = content(str(tmp_path / "local"))
    assert len(reference["images"]) == 6 and len(reference["duplicates"]) == 1
    with serving(functools.partial(_QuietHandler, directory=str(folder))) as url:
        assert main(["memorize", f"{url}/{name}", "--memory", str(tmp_path / "http")]) == 0
    assert main(["memorize", f"s3://inputs/archives/{name}", "--memory", f"s3://memories/{name}"]) == 0
    assert content(str(tmp_path / "http")) == reference
    assert content(f"s3://memories/{name}") == reference


def test_a_signed_url_is_read_by_the_suffix_of_its_path(http_root, tmp_path):
    """A presigned URL (shard-000.tar?X-Amz-Signature=...) was read as one image: one
    not_an_image reject for the whole shard, exit 0."""
    from memgen.shards import split_source

    memory = str(tmp_path / "memory")
    url = f"{http_root}/shard-000.tar?X-Amz-Expires=3600&X-Amz-Signature=abc"
    assert main(["memorize", url, "--memory", memory]) == 0
    manifest = read_manifest(memory)
    assert (manifest["counts"]["images"], manifest["counts"]["rejects"]) == (6, 0)
    sources = [r["source"] for r in open_table(memory, "images").to_table(columns=["source"]).to_pylist()]
    assert sorted(split_source(s) for s in sources) == [(url, f"a{i}") for i in range(6)]


def test_parquet_over_http_without_range_support(http_root, shards, tmp_path):
    """http.server serves no ranges: Parquet (footer first) is copied to local disk once.
    Over 5 MiB, fsspec's block, so that reading it whole in one request is not enough."""
    noise = np.random.default_rng(0).integers(0, 256, (4, 800, 800, 3), dtype=np.uint8)
    rows = [{"key": f"k{i}", "image": encode(Image.fromarray(p), "PNG")} for i, p in enumerate(noise)]
    write_parquet(shards / "rows.parquet", rows)
    assert (shards / "rows.parquet").stat().st_size > 5 << 20
    over_http, local = str(tmp_path / "http"), str(tmp_path / "local")
    assert main(["memorize", f"{http_root}/rows.parquet", "--memory", over_http]) == 0
    assert main(["memorize", str(shards / "rows.parquet"), "--memory", local]) == 0
    assert read_manifest(over_http)["counts"]["images"] == 4
    assert content(over_http) == content(local)


def test_single_image_files_over_http(http_root, shards, tmp_path):
    """A stream gives what has arrived (64 KB at a time here): the file is read whole."""
    noise = np.random.default_rng(1).integers(0, 256, (600, 600, 3), dtype=np.uint8)
    (shards / "big.png").write_bytes(encode(Image.fromarray(noise), "PNG"))
    assert (shards / "big.png").stat().st_size > 1 << 20
    memory = str(tmp_path / "m")
    assert main(["memorize", f"{http_root}/big.png", "--memory", memory]) == 0
    (row,) = open_table(memory, "images").to_table().to_pylist()
    assert row["image"] == (shards / "big.png").read_bytes()
    capped = str(tmp_path / "capped")  # too large: rejected without being downloaded to be measured
    assert main(["memorize", f"{http_root}/big.png", "--memory", capped, "--max_bytes", "1000"]) == 0
    (reject,) = open_table(capped, "rejects").to_table().to_pylist()
    assert reject["error_type"] == "too_large" and reject["n_bytes"] > 1000


class _CountingHandler(_QuietHandler):
    def send_head(self):  # what GET and HEAD both answer with
        self.server.requests.append(self.command)
        return super().send_head()


def test_a_shard_over_http_costs_one_get_a_read(shards, tmp_path):
    """fsspec asks info() (a HEAD) before each GET it opens: twice the requests a shard."""
    requests: list[str] = []
    with serving(functools.partial(_CountingHandler, directory=str(shards)), requests=requests) as root:
        assert main(["memorize", f"{root}/shard-{{000,002}}.tar", "--memory", str(tmp_path / "m")]) == 0
    # discovery asks the first URL; each shard is read to fingerprint, then to write its images
    assert requests == ["GET"] * 5


class _CutShortHandler(http.server.BaseHTTPRequestHandler):
    """Announces the whole file in Content-Length, sends half of it and closes: a dropped
    connection, a CDN reset. With self.server.fails_from = N, only from the Nth request of a
    path on (1: every one), and a 500 instead of a cut when self.server.status is 500."""

    def do_GET(self):  # noqa: N802 - the base class's name
        data = (self.server.root / self.path.lstrip("/")).read_bytes()
        seen = self.server.requests[self.path] = self.server.requests.get(self.path, 0) + 1
        if seen >= getattr(self.server, "fails_from", 1) and getattr(self.server, "status", 200) == 500:
            self.send_response(500)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        failing = seen >= getattr(self.server, "fails_from", 1)
        self.wfile.write(data[: len(data) // 2] if failing else data)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_a_body_cut_short_every_time_is_an_unreadable_shard_not_a_failed_run(shards, tmp_path):
    """aiohttp raises ClientPayloadError (not an OSError) when the body ends before its
    Content-Length: it ended the run with a traceback, exit 1, the other shards lost too; then
    it was a corrupt_shard reject, which says the file is damaged, not worth a retry. It is
    asked for again RESUMES times before it is an unreadable reject."""
    memory, requests = str(tmp_path / "m"), {}
    with serving(_CutShortHandler, root=shards, requests=requests) as root:
        url = f"{root}/shard-000.tar"
        assert main(["memorize", url, str(shards / "shard-002.tar"), "--memory", memory]) == 0
    assert requests["/shard-000.tar"] >= 1 + transfer.RESUMES
    manifest = read_manifest(memory)
    # Of the cut shard aiohttp gives what it read before the connection closed, which varies:
    # it raises on any read after, before the bytes that did arrive.
    assert manifest["balanced"] and set(manifest["counts"]["rejects_by_reason"]) == {"unreadable"}
    cut = [r for r in open_table(memory, "rejects").to_table().to_pylist() if r["stage"] == "read"]
    assert cut[0]["source"].startswith(url) and "ClientPayloadError" in cut[0]["message"]
    assert cut[0]["message"].endswith(f"; the same after asking {transfer.RESUMES} more times")
    images = open_table(memory, "images").to_table(columns=["source"]).to_pylist()
    assert sum(r["source"].startswith(str(shards)) for r in images) == 4  # the other shard, whole


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves byte ranges (206), as CDNs and object stores do, or ignores them when
    self.server.ranges is False. The second answer for each path (the first read of it, after
    discovery's request) announces the whole file and stops halfway, 0.3 s after sending half.
    Records each request's Range header in self.server.asked. Misbehaving, when asked to:
    `shift` starts a range that many bytes before the byte asked for (and says so);
    `changes` serves NAME.v2 (ETag "v2") after the cut; `gzip` compresses every answer
    (Content-Encoding), and then sends no ranges; `gone` answers a range 416; `every` = N
    cuts every answer after N bytes."""

    def do_GET(self):  # noqa: N802 - the base class's name
        server, name = self.server, self.path.lstrip("/")
        asked = self.headers.get("Range")
        server.asked.setdefault(self.path, []).append(asked)
        cut, after_cut = len(server.asked[self.path]) == 2, len(server.asked[self.path]) > 2
        version = 2 if getattr(server, "changes", False) and after_cut else 1
        data = (server.root / (f"{name}.v2" if version == 2 else name)).read_bytes()
        compressed = getattr(server, "gzip", False)
        ranged = bool(asked) and server.ranges and not compressed
        data = gzip.compress(data) if compressed else data
        shift = getattr(server, "shift", 0)
        start = max(0, int(asked.removeprefix("bytes=").rstrip("-")) - shift) if ranged else 0
        if ranged and getattr(server, "gone", False):  # the file is shorter now than what was read
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if ranged else 200)
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        if compressed:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("ETag", f'"v{version}"')
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        every = getattr(server, "every", None)
        end = min(start + every, len(data)) if every else len(data) // 2 if cut else len(data)
        self.wfile.write(data[start:end])
        self.wfile.flush()
        if end < len(data):
            time.sleep(0.3)  # the client reads what came before the reset (aiohttp drops what it has not)
        self.close_connection = True

    def log_message(self, format, *args):  # noqa: A002
        pass


def _served_shards(shards: Path, folder: Path) -> Path:
    folder.mkdir()
    for name in ("shard-000.tar", "shard-002.tar"):
        (folder / name).write_bytes((shards / name).read_bytes())
    return folder


@pytest.mark.parametrize("ranges", [True, False])
def test_a_body_cut_once_is_asked_for_again_from_where_it_stopped(shards, tmp_path, ranges):
    """One reset in a shard's download made the whole shard an unreadable reject. A server
    without ranges sends the whole body again, and what was read is skipped; a gzipped or
    zstd shard is resumed beneath its decompression, an Arrow stream beneath pyarrow's reads."""
    served = _served_shards(shards, tmp_path / "served")
    (served / "shard-001.tar.gz").write_bytes(gzip.compress((shards / "shard-001.tar").read_bytes()))
    (served / "shard-003.tar.zst").write_bytes(zstandard.compress((shards / "shard-001.tar").read_bytes()))
    table = pa.table({"jpg": [jpeg(100 + i) for i in range(6)]})
    with pa.ipc.new_stream(served / "shard-004.arrow", table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    memory, local, asked = str(tmp_path / "m"), str(tmp_path / "local"), {}
    with serving(_RangeHandler, root=served, asked=asked, ranges=ranges) as root:
        assert main(["memorize", f"{root}/shard-{{000,002}}.tar", f"{root}/shard-001.tar.gz",
                     f"{root}/shard-003.tar.zst", f"{root}/shard-004.arrow", "--memory", memory]) == 0
    assert main(["memorize", str(served / "*"), "--memory", local]) == 0
    assert content(memory) == content(local)
    assert read_manifest(memory)["counts"] == read_manifest(local)["counts"]
    for path, headers in asked.items():  # the read stopped halfway, and went on from there
        assert headers[:2] == [None, None], path
        assert int(headers[2].removeprefix("bytes=").rstrip("-")) > 0, (path, headers)


def test_a_body_compressed_by_the_server_is_resumed_by_skipping_not_by_a_range(shards, tmp_path):
    """A range counts the compressed bytes, the read the decompressed ones: asked for by range,
    the rest would start at the wrong byte."""
    served = _served_shards(shards, tmp_path / "served")
    memory, local, asked = str(tmp_path / "m"), str(tmp_path / "local"), {}
    with serving(_RangeHandler, root=served, asked=asked, ranges=True, gzip=True) as root:
        assert main(["memorize", f"{root}/shard-{{000,002}}.tar", "--memory", memory]) == 0
    assert main(["memorize", str(served / "*"), "--memory", local]) == 0
    assert content(memory) == content(local)
    assert all(headers[:3] == [None, None, None] for headers in asked.values()), asked


@pytest.mark.parametrize("misbehaving", [{"shift": 100}, {"changes": True}])
def test_a_resumed_body_that_is_not_the_rest_of_the_same_file_is_never_spliced_in(
        shards, tmp_path, misbehaving):
    """A range that starts elsewhere than asked, or another version of the file (its ETag),
    made images of bytes from two places."""
    served = _served_shards(shards, tmp_path / "served")
    other = [sample(f"a{i}", jpeg(200 + i), f"other {i}") for i in range(6)]  # the same keys, new images
    write_tar(served / "shard-000.tar.v2", other)
    memory, asked = str(tmp_path / "m"), {}
    with serving(_RangeHandler, root=served, asked=asked, ranges=True, **misbehaving) as root:
        url = f"{root}/shard-000.tar"
        assert main(["memorize", url, "--memory", memory]) == 0
    (failed,) = [r for r in open_table(memory, "rejects").to_table().to_pylist() if r["stage"] == "read"]
    assert failed["error_type"] == "unreadable"
    if "changes" in misbehaving:  # not asked again: it would not become the same file
        assert "another version of the shard" in failed["message"] and len(asked["/shard-000.tar"]) >= 3
        assert not failed["message"].endswith("more times")
    else:
        assert "the server sent them from" in failed["message"]
        assert failed["message"].endswith(f"the same after asking {transfer.RESUMES} more times")
    originals = {f"a{i}": jpeg(i) for i in range(6)}
    images = open_table(memory, "images").to_table(columns=["source", "image"]).to_pylist()
    assert all(r["image"] == originals[r["source"].rsplit("#", 1)[1]] for r in images)
    if "changes" in misbehaving:  # re-read to write them, the records read before the cut are v2's
        assert not images and read_manifest(memory)["counts"]["rejects_by_reason"]["changed_during_run"] > 0
    else:
        assert images


def test_a_download_that_makes_progress_is_asked_for_again_as_long_as_it_does(shards, tmp_path):
    """Cut every 4,000 bytes, each time further on: it ended unreadable after 4 cuts however
    much each answer brought."""
    served = _served_shards(shards, tmp_path / "served")
    memory, asked = str(tmp_path / "m"), {}
    size = (served / "shard-000.tar").stat().st_size
    with serving(_RangeHandler, root=served, asked=asked, ranges=True, every=4000) as root:
        assert main(["memorize", f"{root}/shard-000.tar", str(served / "shard-002.tar"),
                     "--memory", memory]) == 0
    assert len(asked["/shard-000.tar"]) > 1 + transfer.RESUMES and size > 4000 * (1 + transfer.RESUMES)
    manifest = read_manifest(memory)
    assert manifest["counts"]["images"] == 10 and manifest["counts"]["rejects"] == 0


def test_a_shard_shorter_than_what_was_read_is_not_asked_for_again(shards, tmp_path):
    """416 Range Not Satisfiable (or 404): the file changed; asking 4 more times, twice, took 35 s."""
    served = _served_shards(shards, tmp_path / "served")
    memory, asked = str(tmp_path / "m"), {}
    with serving(_RangeHandler, root=served, asked=asked, ranges=True, gone=True) as root:
        assert main(["memorize", f"{root}/shard-000.tar", str(served / "shard-002.tar"),
                     "--memory", memory]) == 0
    # the read, then the re-read to write the images (without discovery's: a local shard is given
    # too), cut halfway, then asked for the rest once: 416
    assert asked["/shard-000.tar"][:2] == [None, None] and len(asked["/shard-000.tar"]) == 3
    lost = open_table(memory, "rejects").to_table().to_pylist()
    assert lost and all(r["stage"] == "materialize" and r["error_type"] == "unreadable" for r in lost)
    assert "the server answered 416" in lost[0]["message"] and "more times" not in lost[0]["message"]


class _DeadHandler(http.server.BaseHTTPRequestHandler):
    """Announces a body and sends none of it; counts the requests in self.server.requests."""

    def do_GET(self):  # noqa: N802 - the base class's name
        self.server.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.close_connection = True

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_a_shard_of_which_nothing_could_be_read_is_not_read_again_to_write_it(shards, tmp_path):
    """The write stage re-read it, waiting out the same dead server again (5 x --http_timeout
    and 15 s of pauses each time) for nothing to write."""
    memory, requests = str(tmp_path / "m"), []
    with serving(_DeadHandler, requests=requests) as root:
        assert main(["memorize", f"{root}/shard-000.tar", str(shards / "shard-002.tar"),
                     "--memory", memory]) == 0
    assert requests == ["/shard-000.tar"] * (1 + transfer.RESUMES)
    assert read_manifest(memory)["counts"]["rejects_by_reason"] == {"unreadable": 1}


@pytest.mark.parametrize("status", [200, 500])
def test_a_shard_that_fails_only_when_re_read_is_unreadable_not_changed(shards, tmp_path, status):
    """Read whole to fingerprint, then cut or answered 500 when re-read to write its images:
    every record was a changed_during_run reject ("record not found"), the server's error
    nowhere, though the shard never changed."""
    memory = str(tmp_path / "m")
    # with a local shard beside it, nobody asks the URL whether it exists: GET 1 is the first read
    with serving(_CutShortHandler, root=shards, requests={}, fails_from=2, status=status) as root:
        url = f"{root}/shard-000.tar"
        assert main(["memorize", url, str(shards / "shard-002.tar"), "--memory", memory]) == 0
    manifest = read_manifest(memory)
    assert manifest["balanced"] and set(manifest["counts"]["rejects_by_reason"]) == {"unreadable"}
    rejects = open_table(memory, "rejects").to_table().to_pylist()
    lost = [r for r in rejects if r["stage"] == "materialize"]
    images = open_table(memory, "images").to_table(columns=["source"]).to_pylist()
    assert lost and sum(r["source"].startswith(url) for r in images) + len(lost) == 6
    assert all(r["message"].startswith("the shard could not be re-read to write it: ") for r in lost)
    assert ("500" if status == 500 else "ClientPayloadError") in lost[0]["message"]


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    """/silent/NAME: no answer until self.server.release is set; /stalls/NAME: half the body,
    then nothing until released; /drips/NAME: the body in 20 pieces, 0.1 s apart."""

    def do_GET(self):  # noqa: N802 - the base class's name
        how, name = self.path.strip("/").split("/")
        data = (self.server.root / name).read_bytes()
        if how == "silent":
            self.server.release.wait(30)
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        pieces = [data[: len(data) // 2], data[len(data) // 2:]] if how == "stalls" else \
            [data[i * len(data) // 20: (i + 1) * len(data) // 20] for i in range(20)]
        for i, piece in enumerate(pieces):
            if i and how == "stalls":
                self.server.release.wait(30)
            elif i:
                time.sleep(0.1)
            self.wfile.write(piece)
            self.wfile.flush()

    def handle(self):
        with contextlib.suppress(ConnectionError):  # the client gave up on a stalled answer
            super().handle()

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_a_silent_server_is_an_unreadable_shard_after_http_timeout_and_a_slow_one_is_read_whole(
        shards, tmp_path):
    """aiohttp's default gave a whole request 300 s: a longer download was cut off as a
    corrupt shard, and a server that stopped sending held the worker that long."""
    memory = str(tmp_path / "m")
    release = threading.Event()
    with serving(_SlowHandler, root=shards, release=release) as root:
        try:
            assert main(["memorize", f"{root}/silent/shard-001.tar", f"{root}/stalls/shard-000.tar",
                         f"{root}/drips/shard-002.tar", "--memory", memory, "--http_timeout", "0.5"]) == 0
        finally:
            release.set()
    manifest = read_manifest(memory)
    assert manifest["balanced"] and manifest["counts"]["rejects_by_reason"] == {"unreadable": 2}
    rejects = {r["source"].split("/")[3]: r for r in open_table(memory, "rejects").to_table().to_pylist()}
    assert rejects["silent"]["stage"] == "open" and "Timeout" in rejects["silent"]["message"]
    assert rejects["stalls"]["stage"] == "read"
    said = "the server sent nothing for 0.5 s (--http_timeout); the same after asking"
    assert rejects["stalls"]["message"].endswith(f"{said} {transfer.RESUMES} more times")
    images = [r["source"] for r in open_table(memory, "images").to_table(columns=["source"]).to_pylist()]
    assert sorted(s.rsplit("/", 1)[1] for s in images if "/drips/" in s) == [
        f"shard-002.tar#c{i}" for i in range(4)]  # 2 s to read, 0.1 s at most without a byte


class _ErrorHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the base class's name
        self.send_response(int(self.path.split("/")[1]))
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_a_server_error_or_refusal_is_unreadable_and_only_a_404_missing():
    """fsspec says FileNotFoundError for all three; a 500 or a refused connection is worth a
    retry, so the reject says so (they were all "missing")."""
    from memgen.readers import ReaderConfig, read_shard
    from memgen.records import Shard

    with serving(_ErrorHandler) as root, socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # a port nothing listens on
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}/a.tar"
        said = [next(iter(read_shard(Shard.of(0, url, "tar"), ReaderConfig())))
                for url in (f"{root}/500/a.tar", f"{root}/404/a.tar", nobody)]
    error, missing, refused = said
    assert [r.error_type for r in said] == ["unreadable", "missing", "unreadable"]
    assert error.message.endswith("ClientResponseError: 500 Internal Server Error")
    assert "Cannot connect to host" in refused.message


def test_only_missing_http_urls_is_no_input_in_one_line(http_root, tmp_path, capsys):
    memory = tmp_path / "memory"
    assert main(["memorize", f"{http_root}/shard-{{404..405}}.tar", "--memory", str(memory)]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith(f"no input matched: {http_root}/shard-{{404..405}}.tar")  # said all
    assert not memory.exists()


class _Counting404Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the base class's name
        self.server.requests.append(self.command)
        self.send_response(404)
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_asking_whether_http_urls_answer_costs_one_get_each(tmp_path, capsys):
    """HEAD then GET each (fsspec's info()): twice the requests, and twice the wait on a
    silent server."""
    requests: list[str] = []
    with serving(_Counting404Handler, requests=requests) as root:
        assert main(["memorize", f"{root}/shard-{{0..2}}.tar", "--memory", str(tmp_path / "m")]) == 2
    assert requests == ["GET"] * 3 and "no input matched" in capsys.readouterr().err


class _NotGzipHandler(http.server.BaseHTTPRequestHandler):
    """Says Content-Encoding: gzip and sends bytes that are not: the same every time."""

    def do_GET(self):  # noqa: N802 - the base class's name
        data = (self.server.root / "shard-000.tar").read_bytes()
        self.send_response(200)
        self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_a_body_that_cannot_be_decoded_is_damage_not_a_transfer_failure(shards, tmp_path):
    """Only a connection cut or lost is unreadable (worth a retry); every retry of this fails."""
    memory = str(tmp_path / "m")
    with serving(_NotGzipHandler, root=shards) as root:
        inputs = [f"{root}/shard-000.tar", str(shards / "shard-002.tar")]
        assert main(["memorize", *inputs, "--memory", memory]) == 0
    assert read_manifest(memory)["counts"]["rejects_by_reason"] == {"corrupt_shard": 1}


class _SilentHandler(http.server.BaseHTTPRequestHandler):
    """Counts each request, then answers nothing until self.server.release is set."""

    def do_GET(self):  # noqa: N802 - the base class's name
        self.server.requests.append(self.path)
        self.server.release.wait(30)

    def handle(self):
        with contextlib.suppress(ConnectionError):  # the client gave up
            super().handle()

    def log_message(self, format, *args):  # noqa: A002
        pass


def test_a_silent_server_is_asked_three_times_for_a_brace_range_of_its_urls(tmp_path, capsys):
    """Each URL of the range waited --http_timeout: a day for 1,000 shards on a host down."""
    requests: list[str] = []
    release = threading.Event()
    with serving(_SilentHandler, requests=requests, release=release) as root:
        try:
            assert main(["memorize", f"{root}/shard-{{0..9}}.tar", "--memory", str(tmp_path / "m"),
                         "--http_timeout", "0.5"]) == 2
        finally:
            release.set()
    assert requests == [f"/shard-{i}.tar" for i in range(3)] and "(asked " in capsys.readouterr().err


def test_a_server_down_or_refusing_is_said_not_only_no_input(tmp_path, capsys):
    """A server that is down, or answers 403 or 500, said only "no input matched": the
    user's URLs were blamed."""
    with serving(_ErrorHandler) as root, socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # a port nothing listens on
        down = f"http://127.0.0.1:{closed.getsockname()[1]}/a.tar"
        for url, why in ((f"{root}/403/a.tar", "403 Forbidden"),
                         (f"{root}/500/a.tar", "500 Internal Server Error"),
                         (down, "ClientConnectorError: Cannot connect to host")):
            assert main(["memorize", url, "--memory", str(tmp_path / "m")]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"no input matched: {url} (asked {url}: {why}" in err, err


def test_calibration_files_missing_from_a_bucket_are_found(s3):
    from memgen.classify.concept import LabelledFile, missing_labelled

    s3.pipe({"inputs/labelled/cat.jpg": jpeg(1), "inputs/labelled/dog.jpg": jpeg(2)})
    s3.invalidate_cache()
    named = [LabelledFile(f"s3://inputs/{key}", True, None)
             for key in ("labelled/cat.jpg", "labelled/dog.jpg", "labelled/cat.jpeg", "nowhere/x.jpg")]
    assert missing_labelled(named) == ["s3://inputs/labelled/cat.jpeg", "s3://inputs/nowhere/x.jpg"]


def test_a_bucket_deleted_during_the_run_is_not_made_again_and_the_run_says_so(s3, monkeypatch, capsys):
    """Writing a part made the folder first, and s3fs's makedirs creates a missing bucket: the
    run filled a new bucket and blamed "another run" for the missing marker."""
    import memgen.stages.write

    s3.mkdir("doomed")
    write_images = memgen.stages.write.write_images

    def bucket_gone_first(*args, **kwargs):
        if s3.exists("doomed"):
            s3.rm("doomed/m", recursive=True)
            s3.rmdir("doomed")
            s3.invalidate_cache()
        return write_images(*args, **kwargs)

    monkeypatch.setattr(memgen.stages.write, "write_images", bucket_gone_first)
    capsys.readouterr()
    assert main(["memorize", "s3://inputs/shards/shard-002.tar", "--memory", "s3://doomed/m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("memgen memorize: error: ") and "bucket does not exist" in err[-1]
    assert "Traceback" not in "\n".join(err)
    s3.invalidate_cache()
    assert not s3.exists("doomed")


def test_an_s3_console_folder_in_an_input_is_not_a_skipped_file(s3, caplog):
    from memgen.shards import discover

    s3.call_s3("put_object", Bucket="inputs", Key="console/", Body=b"")  # "Create folder"
    s3.call_s3("put_object", Bucket="inputs", Key="console/sub/", Body=b"")
    s3.pipe({"inputs/console/sub/a.jpg": jpeg(1)})
    s3.invalidate_cache()
    with caplog.at_level(logging.WARNING, logger="memgen.shards"):
        shards = discover(["s3://inputs/console"])
    assert [s.uri for s in shards] == ["s3://inputs/console/sub/a.jpg"]
    assert not [r for r in caplog.records if r.name == "memgen.shards"]


class _FailingS3Proxy(http.server.BaseHTTPRequestHandler):
    """Forwards to the S3 server, but answers a GET of an object whose key ends with `failing`
    500 InternalError, as S3 does when it cannot serve one (a listing is served)."""

    protocol_version = "HTTP/1.1"
    upstream = ""
    failing = ""

    def log_message(self, *args) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "GET" and self.path.split("?")[0].endswith(self.failing):
            error = (b"<Error><Code>InternalError</Code>"
                     b"<Message>We encountered an internal error.</Message></Error>")
            self.send_response(500)
            self.send_header("Content-Length", str(len(error)))
            self.end_headers()
            self.wfile.write(error)
            return
        host, port = self.upstream.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port))
        connection.request(self.command, self.path, body=body or None, headers=dict(self.headers.items()))
        answer = connection.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", answer.getheader("Content-Length", "0") if self.command == "HEAD"
                         else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


@pytest.mark.parametrize("failing", ["shard-001.tar", "shard.parquet"])
def test_a_shard_the_store_fails_to_serve_is_unreadable_not_damaged(s3, s3_server, shards, monkeypatch,
                                                                   tmp_path, failing):
    """s3fs raises S3's 500 as an OSError from botocore's error: the shard was a corrupt_shard,
    and a retry of the command had nothing to read again (a Parquet shard's lost connection
    ended the whole run)."""
    write_parquet(tmp_path / "shard.parquet", [{"key": f"p{i}", "image": jpeg(200 + i)} for i in range(3)])
    s3.put(str(tmp_path / "shard.parquet"), "inputs/failing/shard.parquet")
    s3.put(str(shards / "shard-001.tar"), "inputs/failing/shard-001.tar")
    handler = type("Handler", (_FailingS3Proxy,), {"upstream": s3_server, "failing": failing})
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore asks again itself: once here
    s3fs.S3FileSystem.clear_instance_cache()
    memory = str(tmp_path / "memory")
    try:
        assert main(["memorize", "s3://inputs/failing", "--memory", memory]) == 0
    finally:
        proxy.shutdown()
    failed = [r for r in open_table(memory, "rejects").to_table().to_pylist() if r["stage"] == "read"]
    said = [(r["source"], r["error_type"]) for r in failed]
    assert said == [(f"s3://inputs/failing/{failing}", "unreadable")]
    assert failed[0]["message"].endswith("We encountered an internal error.")  # what S3 said
    manifest = read_manifest(memory)
    assert manifest["balanced"] and manifest["counts"]["images"] > 0  # the other shard was read


def test_an_object_rewritten_while_read_is_a_changed_shard():
    """s3fs raises FileExpired when the object's ETag changed between its answers (an OSError
    of its own): a corrupt_shard before, now a retry's to read."""
    from s3fs.utils import FileExpired

    class Rewritten(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            raise FileExpired("inputs/shards/a.tar", '"etag"')

    with pytest.raises(transfer.ShardChanged, match="rewritten while it was read") as raised:
        transfer.FailsAsOSError(Rewritten()).read(10)
    assert transfer.transfer_failed(raised.value)


def test_a_run_inside_an_s3_input_is_named_by_its_url(s3, caplog):
    s3.pipe({"inputs/runs/s/.memgen-run": b"sample 0123", "inputs/runs/s/contact_sheet.jpg": jpeg(2),
             "inputs/runs/s/images/sample-000000.tar": b"a tar"})
    s3.invalidate_cache()
    with caplog.at_level(logging.WARNING, logger="memgen.shards"):
        shards = discover(["s3://inputs/runs"])
    assert [s.uri for s in shards] == ["s3://inputs/runs/s/images/sample-000000.tar"]
    said = [r.getMessage() for r in caplog.records if r.name == "memgen.shards"]
    assert said == ["s3://inputs/runs/s is the output of a memgen run: only its images/ is read"]


def test_a_hugging_face_image_file_beside_a_parquet_on_a_server_is_read_from_there(tmp_path):
    """bytes null, path relative: read from the Parquet's folder on the same server (a signed
    URL's query is not the image's), a missing one a `missing` reject of its row."""
    from memgen.readers import ReaderConfig, read_shard
    from memgen.records import Record, Shard

    (tmp_path / "data" / "img").mkdir(parents=True)
    (tmp_path / "data" / "img" / "a b#1.jpg").write_bytes(jpeg(1))
    images = pa.array([{"bytes": None, "path": "img/a b#1.jpg"}, {"bytes": None, "path": "img/gone.jpg"}],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": images, "url": ["u0", "u1"]}), tmp_path / "data" / "train.parquet")
    with serving(functools.partial(_QuietHandler, directory=str(tmp_path))) as root:
        url = f"{root}/data/train.parquet?sig=1"
        kept, gone = read_shard(Shard.of(0, url, "parquet"), ReaderConfig())
    assert isinstance(kept, Record) and kept.data == jpeg(1) and kept.source == f"{url}#000000000"
    assert (gone.stage, gone.error_type, gone.source) == ("read", "missing", f"{url}#000000001")
    assert gone.message.startswith("image.path 'img/gone.jpg': FileNotFoundError")
    assert gone.message.endswith("(url 'u1')")


def test_a_hugging_face_image_file_on_a_silent_server_is_unreadable_after_http_timeout(tmp_path):
    """Its file is asked for as a shard is: a server that sends nothing, or stops mid-body, for
    --http_timeout fails that row's read (worth a retry), not the run; the others are read."""
    from memgen.readers import ReaderConfig, read_shard
    from memgen.records import Record, Shard

    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(jpeg(i))
    images = pa.array([{"bytes": None, "path": f"../{how}/{i}.jpg"}
                       for i, how in enumerate(("silent", "stalls", "drips"))],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": images}), tmp_path / "train.parquet")
    release = threading.Event()
    with serving(_SlowHandler, root=tmp_path, release=release) as root:
        try:
            silent, stalls, drips = read_shard(Shard.of(0, f"{root}/drips/train.parquet", "parquet"),
                                               ReaderConfig(http_timeout=0.5))
        finally:
            release.set()
    said = "TimeoutError: the server sent nothing for 0.5 s (--http_timeout)"
    assert (silent.error_type, silent.message) == ("unreadable", f"image.path '../silent/0.jpg': {said}")
    assert (stalls.error_type, stalls.message) == ("unreadable", f"image.path '../stalls/1.jpg': {said}")
    assert isinstance(drips, Record) and drips.data == jpeg(2)


def _requests(records: list[logging.LogRecord]) -> collections.Counter[str]:
    """'METHOD /bucket/key' of each request moto's server logged (werkzeug's log, coloured)."""
    lines = (re.sub(r"\x1b\[[0-9;]*m", "", r.getMessage()) for r in records if r.name == "werkzeug")
    return collections.Counter(m.group(1) for line in lines if (m := re.search(r'"([A-Z]+ /[^? ]*)', line)))


def test_a_hugging_face_image_file_in_a_bucket_costs_one_request(s3, caplog):
    """fs.open asked for the object's size (a HEAD) before its GET: two round trips an image on
    S3 or GCS. One ranged GET reads up to max_bytes + 1 bytes: a range past the end gives what
    there is, a zero-byte object (which refuses any range: 416) is empty, a missing one missing."""
    small, big = jpeg(1), jpeg(2, quality=100)
    s3.pipe({"inputs/hf/img/0.jpg": small, "inputs/hf/img/big.jpg": big, "inputs/hf/img/empty.jpg": b""})
    images = pa.array([{"bytes": None, "path": f"img/{name}.jpg"} for name in ("0", "big", "empty", "gone")],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    with s3.open("inputs/hf/train.parquet", "wb") as f:
        pq.write_table(pa.table({"image": images}), f)
    from memgen.readers import ReaderConfig, read_shard
    from memgen.records import Record, Shard

    caplog.set_level(logging.INFO, logger="werkzeug")
    caplog.clear()  # the requests that wrote the bucket
    kept, too_large, empty, gone = read_shard(Shard.of(0, "s3://inputs/hf/train.parquet", "parquet"),
                                              ReaderConfig(max_bytes=len(big) - 1))
    asked = {line: n for line, n in _requests(caplog.records).items() if "/img/" in line}
    assert asked == {f"GET /inputs/hf/img/{name}.jpg": 1 for name in ("0", "big", "empty", "gone")}
    assert isinstance(kept, Record) and kept.data == small
    assert (too_large.error_type, too_large.data) == ("too_large", None)
    said = f"image.path 'img/big.jpg' is more than max_bytes {len(big) - 1} bytes"
    assert too_large.message.startswith(said)
    assert (empty.error_type, empty.n_bytes) == ("not_an_image", 0)
    assert gone.error_type == "missing"
    assert gone.message.startswith("image.path 'img/gone.jpg': FileNotFoundError")


def test_a_hugging_face_image_file_on_a_server_costs_one_get(tmp_path):
    """Over http(s) too, open() asked info() (a HEAD) before the GET of each image's file."""
    from memgen.readers import ReaderConfig, read_shard
    from memgen.records import Record, Shard

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "0.jpg").write_bytes(jpeg(1))
    (tmp_path / "img" / "big.jpg").write_bytes(jpeg(2) * 40)
    names = ("img/0.jpg", "img/gone.jpg", "img/big.jpg")
    images = pa.array([{"bytes": None, "path": name} for name in names],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"image": images}), tmp_path / "train.parquet")
    requests: list[str] = []
    config = ReaderConfig(max_bytes=len(jpeg(1)) * 4)
    with serving(functools.partial(_CountingHandler, directory=str(tmp_path)), requests=requests) as root:
        kept, gone, big = read_shard(Shard.of(0, f"{root}/train.parquet", "parquet"), config)
    assert isinstance(kept, Record) and kept.data == jpeg(1) and gone.error_type == "missing"
    # its size is not known without a HEAD: not the one open() was given to skip it
    assert big.error_type == "too_large" and f"is more than max_bytes {config.max_bytes} bytes" in big.message
    assert requests == ["GET"] * 4  # the Parquet, then each image's file


def test_shards_named_without_a_suffix_in_a_bucket_are_read_as_their_first_bytes_say(s3, tmp_path, caplog):
    """TensorFlow's ImageNet TFRecords (train-00000-of-01024) and Hive's 000000_0 in a bucket:
    one ranged GET of their first bytes each tells their kind before the run."""
    import tfrecord

    from memgen.readers import ReaderConfig, read_shard
    from memgen.shards import discover

    writer = tfrecord.TFRecordWriter(str(tmp_path / "train"))
    for data in (jpeg(1), jpeg(2)):
        writer.write({"jpg": (data, "byte")})
    writer.close()
    s3.put(str(tmp_path / "train"), "inputs/tf/train-00000-of-00001")
    with s3.open("inputs/tf/000000_0", "wb") as f:
        pq.write_table(pa.table({"jpg": [jpeg(3)]}), f)
    caplog.set_level(logging.INFO, logger="werkzeug")
    caplog.clear()
    shards = discover(["s3://inputs/tf"])
    assert [(s.uri, s.kind) for s in shards] == [("s3://inputs/tf/000000_0", "parquet"),
                                                 ("s3://inputs/tf/train-00000-of-00001", "tfrecord")]
    asked = {line: n for line, n in _requests(caplog.records).items() if line.startswith("GET /inputs/tf/")}
    assert asked == {"GET /inputs/tf/000000_0": 1, "GET /inputs/tf/train-00000-of-00001": 1}
    assert [r.data for s in shards for r in read_shard(s, ReaderConfig())] == [jpeg(3), jpeg(1), jpeg(2)]
