"""deploy/: Flex Template metadata, launcher, image, Cloud Scheduler body and Airflow DAG.

Nothing here reaches a cloud. What can drift is checked against the code:
- each metadata.json lists exactly the flags its job's options class declares, with
  regexes that accept the flag's default and choices and an isOptional that matches
  what the job's config really requires;
- every parameter, passed the way the Flex launcher passes it (--name=value), parses;
- the scheduler body and the DAG name real templates (build.sh's naming) and real
  parameters, with values that match the regexes and build a valid job config;
- the launcher (deploy/dataflow/launch.py) really runs a job, ${YESTERDAY} rendered.
The DAG is read with `ast` (apache-airflow is too heavy to install for one test).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import importlib
import importlib.util
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

from memgen.memory import read_manifest
from memgen.pipelines.errors import UsageError
from memgen.pipelines.options import boolean, check_urls, parse_job
from shardkit import jpeg, sample, write_tar

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DATAFLOW = DEPLOY / "dataflow"
# job -> (module, options class, config class)
JOBS = {
    "memorize": ("memgen.pipelines.memorize", "MemorizeOptions", "MemorizeConfig"),
    "sample": ("memgen.pipelines.sample", "SampleOptions", "SampleConfig"),
    "evaluate": ("memgen.pipelines.evaluate", "EvaluateOptions", "EvaluateConfig"),
}
RUN_DATE = dt.date(2026, 3, 1)  # the day a test run is launched; its data is the day before
DS = "2026-02-28"
AIRFLOW_VARIABLES = {"memgen_project": "memgen-prod", "memgen_region": "europe-west4",
                     "memgen_bucket": "memgen-data", "memgen_image_tag": "abc123",
                     "memgen_repository": "images",
                     "memgen_worker_sa": "dataflow-worker@memgen-prod.iam.gserviceaccount.com"}
ENVSUBST = {"BUCKET": "memgen-data", "IMAGE": "europe-west4-docker.pkg.dev/memgen-prod/memgen/m:1",
            "WORKER_SA": "dataflow-worker@memgen-prod.iam.gserviceaccount.com"}
# FlexTemplateRuntimeEnvironment fields this project uses (Dataflow REST v1b3)
RUNTIME_ENVIRONMENT = {"tempLocation", "stagingLocation", "sdkContainerImage", "serviceAccountEmail",
                       "machineType", "maxWorkers", "numWorkers"}


def job_module(job: str):
    return importlib.import_module(JOBS[job][0])


def options_class(job: str):
    return getattr(job_module(job), JOBS[job][1])


def config_class(job: str):
    return getattr(job_module(job), JOBS[job][2])


def declared_flags(job: str) -> dict[str, argparse.Action]:
    """The flags the job's options class declares, parsed from its own parser (dest -> action)."""
    parser = argparse.ArgumentParser(add_help=False)
    options_class(job)._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions}


def metadata(job: str) -> dict:
    path = DATAFLOW / job / "metadata.json"
    assert path.exists(), f"{job} has an options class but no {path.relative_to(ROOT)}"
    return json.loads(path.read_text())


def parameters(job: str) -> dict[str, dict]:
    return {p["name"]: p for p in metadata(job)["parameters"]}


def matches(param: dict, value: str) -> bool:
    return all(re.fullmatch(r, value) for r in param["regexes"])


def to_config(job: str, params: dict[str, str]):
    """Parse --name=value flags exactly as the Flex launcher passes them, into the job's config."""
    argv = load_launch().listed([f"--{k}={v}" for k, v in params.items()])
    options = parse_job(f"memgen {job}", job, options_class(job), argv)
    return config_class(job).from_options(options)


def is_boolean(action: argparse.Action) -> bool:
    return (isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction)
            or action.type is boolean)


# --- Flex Template metadata -------------------------------------------------------------

@pytest.mark.parametrize("job", JOBS)
def test_metadata_lists_exactly_the_options_of_the_job(job):
    flags = declared_flags(job)
    names = [p["name"] for p in metadata(job)["parameters"]]
    assert len(names) == len(set(names))
    assert set(names) == set(flags)
    for p in metadata(job)["parameters"]:
        assert p["label"].strip() and p["helpText"].strip() and p["regexes"], p["name"]
        assert isinstance(p["isOptional"], bool), p["name"]


@pytest.mark.parametrize("job", JOBS)
def test_metadata_regexes_accept_defaults_and_choices_and_reject_junk(job):
    flags = declared_flags(job)
    for name, p in parameters(job).items():
        action = flags[name]
        if is_boolean(action):
            assert matches(p, "true") and matches(p, "false") and not matches(p, "maybe"), name
            continue
        if action.default not in (None, []):
            assert matches(p, str(action.default)), f"{name}: default {action.default!r} rejected"
        for choice in action.choices or ():
            assert matches(p, str(choice)), f"{name}: choice {choice!r} rejected"
        if action.choices or action.type is int:
            assert not matches(p, "-1") and not matches(p, "junk"), name
        assert not matches(p, "a\nb"), name


BOUNDS = {  # values at the edges of what a job accepts (leading zeros aside: the regexes refuse them)
    "seed": ["0", "1", str(2**64 - 1), str(2**64), "99999999999999999999", "-1", "1.5"],
    "max_bytes": ["1", str(2**40), str(2**40 + 1), "0", "-5"],
    "http_timeout": ["0", "0.", "0.0", "00", "1", "0.5", ".5", "10", "1e3", "1.5e-2", "-1", "nan", "inf",
                     "1e99", "1e-99", "1e400", "1e-400", "9" * 400],  # the last three: inf and 0.0
    "weighted": ["true", "True", "FALSE", "yes", "No", "1", "0", "maybe"],
    "embedding": ["true", "True", "FALSE", "yes", "No", "1", "0", "maybe"],
    # as written by hand and as Python formats a probability (not signed:
    # the regexes refuse signs; nor 12e-2 or 0.1e1, which they refuse though the job takes them)
    "label_threshold": ["0", "1", "0.1", ".1", "0.", "1.", "1.0", "00.5", "1e-1", "1E-1", "5e-2", "1.5e-1",
                        ".5e-1", "1.e-1", "1e0", "1e+0", "1E-01", "0e5", "1e-400", "1e400", "1.5", "2",
                        "1.0000001", "1e1", "nan", "inf", ".", "e-1", "0x1", "1e", "-0.1",
                        *(format(p, spec) for p in (0.0, 1e-9, 0.05, 0.1, 1 / 3, 0.5, 0.999, 1.0, 1.01, 7.0)
                          for spec in ("", "e", "E", "g", ".2e", ".3f", ".0e", ".1g"))],
    # URLs as check_urls takes them (s3:// as gs://: gcsfs is not a test dependency)
    "input": ["s3://b/shards/*.tar", "s3://b/shards/{000000..009999}.tar", "https://h/x.tar", "s3:///x",
              "s3://", "s3://b", "file:///x", "/x", "s3://b//x"],
    "memory": ["s3://b/memory/2026-02-28", "s3://b", "s3://b/", "s3://b/m/", "s3://b/m//", "s3:///m",
               "s3://b//m", "s3://b/m//n", "s3://", "file:///m", "/m"],
}
URL_FLAGS = {"input", "memory", "out", "sample", "reference", "known"}
DATAFLOW_RUNNER = ["--runner=DataflowRunner"]
BOUNDS |= {"out": BOUNDS["memory"], "sample": BOUNDS["memory"], "reference": BOUNDS["input"],
           # one parameter, several memories (the launcher splits them); not s3://b//m, which
           # the job reads but no memory is at (--memory refuses it) and the template refuses
           "known": [*(u for u in BOUNDS["memory"] if "//" not in u.split("://", 1)[-1]),
                     "s3://a/m,s3://b/m/", "s3://a/m,s3://b", "s3://a/m,", ",s3://a/m", "s3://a/m,,s3://b/m",
                     "s3://a/m,/m", "s3://a/m,file:///m"]}


@pytest.mark.parametrize(("job", "name"), [(job, name) for job in JOBS for name in BOUNDS
                                          if name in parameters(job)])
def test_regexes_accept_what_the_job_accepts_at_the_edges(job, name):
    """The Flex launcher checks a parameter by its regex before the job sees it: a value it
    passes that the job refuses fails the launch later (http_timeout 0, a seed of 2^64), and
    one it refuses that the job takes is lost (weighted=True, http_timeout=1e3, label_threshold=1e-1)."""
    def accepted(value: str) -> bool:
        try:
            config = to_config(job, {**minimal_parameters(job), name: value})
            if name in URL_FLAGS:  # as the command line checks them (the DAG's gs:// need gcsfs)
                named = value.split(",") if f"--{name}" in load_launch().LIST_FLAGS else [value]
                check_urls([u for u in config.urls() if u[1] in named], PipelineOptions(DATAFLOW_RUNNER))
        except UsageError:
            return False
        return True

    p = parameters(job)[name]
    assert {v: matches(p, v) for v in BOUNDS[name]} == {v: accepted(v) for v in BOUNDS[name]}


def test_memorize_threshold_regex_is_the_range_the_job_accepts():
    from memgen.near import MAX_THRESHOLD

    p = parameters("memorize")["threshold"]
    accepted = [k for k in range(-5, 100) if matches(p, str(k))]
    assert accepted == list(range(MAX_THRESHOLD + 1))


@pytest.mark.parametrize("job", JOBS)
def test_every_parameter_parses_as_the_flex_launcher_passes_it(job):
    """--name=value, one parameter at a time beside the required ones (booleans: see below)."""
    flags = declared_flags(job)
    required = minimal_parameters(job)
    for name, action in flags.items():
        if is_boolean(action) or name in required:
            continue
        value = example_value(action)
        options = parse_job(f"memgen {job}", job, options_class(job),
                            [f"--{k}={v}" for k, v in {**required, name: value}.items()])
        parsed = getattr(options.view_as(options_class(job)), name)
        expected = (action.type or str)(value)
        assert parsed == ([expected] if action.default == [] else expected), name


def example_value(action: argparse.Action) -> str:
    if action.default not in (None, []):
        return str(action.default)
    if action.choices:
        return str(action.choices[0])
    return {int: "7", float: "0.5"}.get(action.type, "gs://memgen-data/example")


def minimal_parameters(job: str) -> dict[str, str]:
    """The required parameters of a job, from the DAG (real values)."""
    params = dag_launches()[job]["launchParameter"]["parameters"]
    return {k: v for k, v in params.items() if not parameters(job)[k]["isOptional"]}


@pytest.mark.parametrize("job", JOBS)
def test_is_optional_matches_what_the_job_requires(job):
    required = minimal_parameters(job)
    to_config(job, required)
    for name in required:
        with pytest.raises(UsageError):
            to_config(job, {k: v for k, v in required.items() if k != name})
    optional = {n for n, p in parameters(job).items() if p["isOptional"]}
    assert optional.isdisjoint(required)


BOOLEAN_FLAGS = [pytest.param("sample", "weighted"), pytest.param("evaluate", "embedding")]


@pytest.mark.parametrize(("job", "flag"), BOOLEAN_FLAGS)
def test_boolean_flags_take_a_flex_value(job, flag):
    assert flag in declared_flags(job)
    base = minimal_parameters(job)
    on, off = to_config(job, {**base, flag: "true"}), to_config(job, {**base, flag: "false"})
    assert on != off


def test_every_boolean_flag_is_listed_for_the_flex_value_check():
    listed = {(p.values[0], p.values[1]) for p in BOOLEAN_FLAGS}
    found = set()
    for job in JOBS:
        found |= {(job, n) for n, a in declared_flags(job).items() if is_boolean(a)}
    assert found <= listed


# --- launcher, image, build script ------------------------------------------------------

def load_launch():
    spec = importlib.util.spec_from_file_location("memgen_flex_launch", DATAFLOW / "launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launcher_renders_yesterday_in_every_argument():
    render = load_launch().render
    argv = ["--input=gs://b/shards/${YESTERDAY}/*.tar", "--memory=gs://b/memory/${YESTERDAY}", "--n=5"]
    assert render(argv, RUN_DATE) == [f"--input=gs://b/shards/{DS}/*.tar", f"--memory=gs://b/memory/{DS}",
                                      "--n=5"]
    assert render(["--x=${YESTERDAY}"], dt.date(2026, 1, 1)) == ["--x=2025-12-31"]


def test_launcher_passes_several_known_memories_as_the_flag_repeated():
    """A template parameter holds one value: the template took one known memory a launch."""
    listed = load_launch().listed
    argv = ["--input=gs://b/s/*.tar", "--known=gs://b/m/2026-02-27,gs://b/m/all", "--memory=gs://b/m/x"]
    assert listed(argv) == ["--input=gs://b/s/*.tar", "--known=gs://b/m/2026-02-27", "--known=gs://b/m/all",
                            "--memory=gs://b/m/x"]
    config = to_config("memorize", {"input": "gs://b/s/*.tar", "memory": "gs://b/m/x",
                                    "known": "gs://b/m/2026-02-27,gs://b/m/all"})
    assert config.known == ("gs://b/m/2026-02-27", "gs://b/m/all")
    assert listed(["--input=gs://b/s/{a,b}.tar", "--known=gs://b/m"]) == ["--input=gs://b/s/{a,b}.tar",
                                                                          "--known=gs://b/m"]


def test_launcher_splits_a_bare_known_flags_value_and_keeps_the_flag():
    """`--known a,b` (the flag, then its value) became `--known=` (no memory) and `a,b` (an input)."""
    argv = load_launch().listed(["--input=gs://b/s/*.tar", "--known", "gs://b/m/1,gs://b/m/2",
                                 "--memory=gs://b/m/x"])
    assert argv == ["--input=gs://b/s/*.tar", "--known", "gs://b/m/1", "gs://b/m/2", "--memory=gs://b/m/x"]
    options = parse_job("memgen memorize", "memorize", options_class("memorize"), argv)
    assert config_class("memorize").from_options(options).known == ("gs://b/m/1", "gs://b/m/2")


def test_flex_launch_without_a_worker_image_gets_the_launchers_own():
    """Without one, Dataflow's workers started Beam's stock image: "No module named memgen",
    after the launcher had claimed the output folder."""
    launch = load_launch()
    flex = ["--input=gs://b/s/*.tar", "--memory=gs://b/m", "--template_location=gs://b/staging/job"]
    image = "europe-west4-docker.pkg.dev/p/memgen/memgen-memorize:abc"
    assert launch.with_image(flex, image) == [*flex, f"--sdk_container_image={image}"]
    for named in (["--sdk_container_image=other:1"], ["--sdk_container_image", "other:1"],
                  ["--worker_harness_container_image=other:1"]):
        assert launch.with_image([*flex, *named], image) == [*flex, *named]
    local = ["--input=/s/*.tar", "--memory=/m"]  # not a Flex launch: Beam's flags as given
    assert launch.with_image(local, "") == local
    with pytest.raises(UsageError, match="names no image for the workers"):
        launch.with_image(flex, "")


def test_launcher_refuses_a_flex_launch_with_no_worker_image_in_one_line(tmp_path):
    argv = [f"--input={tmp_path}/shards/*.tar", f"--memory={tmp_path}/memory", "--runner=DataflowRunner",
            "--template_location=gs://b/staging/job"]
    env = {k: v for k, v in os.environ.items() if k != "MEMGEN_IMAGE"} | {"MEMGEN_JOB": "memorize"}
    done = subprocess.run([sys.executable, str(DATAFLOW / "launch.py"), *argv], capture_output=True,
                          text=True, env=env, timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith("memgen memorize: error: the launch names no image")
    assert not (tmp_path / "memory").exists()


def image_files(text: str) -> dict[str, str]:
    """What the Dockerfile's COPY instructions leave in the image (RUN rm -rf removes):
    {path in the image: path in the repository}."""
    files: dict[str, str] = {}
    workdir = "/"
    for line in text.replace("\\\n", " ").splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "WORKDIR":
            workdir = posixpath.join(workdir, rest.strip())
        elif word == "COPY" and not rest.startswith("--from"):
            *sources, target = rest.split()
            target = posixpath.join(workdir, target)
            for source in sources:
                many = len(sources) > 1 or target.endswith("/")
                files[posixpath.normpath(posixpath.join(target, source) if many else target)] = source
        elif word == "RUN":
            for gone in re.findall(r"rm -rf (\S+)", rest):
                gone = posixpath.join(workdir, gone)
                files = {p: s for p, s in files.items() if p != gone and not p.startswith(gone + "/")}
    return files


def test_launcher_runs_the_job_of_its_image(tmp_path):
    """The Flex entry point as the launcher calls it, python launch.py --name=value ..., from
    a folder laid out as the image leaves the launcher's (sources left beside launch.py
    shadowed the installed memgen: No module named 'memgen.pipelines')."""
    launcher = tmp_path / "template"
    launcher.mkdir()
    py_file = re.search(r"^ENV FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)", dockerfile(), re.M).group(1)
    for path, source in image_files(dockerfile()).items():
        if posixpath.dirname(path) == posixpath.dirname(py_file):
            copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy
            copy(ROOT / source, launcher / posixpath.basename(path))
    # (the tests' editable install maps memgen.pipelines whatever shadows memgen: the image's
    # installed package has no such map, so the layout itself is checked)
    assert not any((launcher / name).exists() for name in ("memgen", "pipelines", "schemas"))
    yesterday = (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()
    shards = tmp_path / "shards" / yesterday
    shards.mkdir(parents=True)
    write_tar(shards / "shard-000.tar", [sample(f"k{i}", jpeg(i % 3)) for i in range(5)])
    argv = [f"--input={tmp_path}/shards/${{YESTERDAY}}/*.tar", f"--memory={tmp_path}/memory/${{YESTERDAY}}",
            "--threshold=4", "--runner=FnApiRunner"]
    done = subprocess.run([sys.executable, str(launcher / "launch.py"), *argv], capture_output=True,
                          text=True, env={**os.environ, "MEMGEN_JOB": "memorize"}, timeout=120, cwd=launcher)
    assert done.returncode == 0, done.stderr
    manifest = read_manifest(str(tmp_path / "memory" / yesterday))
    assert manifest["counts"]["records_in"] == 5 and manifest["counts"]["images"] == 3
    assert manifest["options"]["threshold"] == 4


def dockerfile() -> str:
    return (DATAFLOW / "Dockerfile").read_text()


def test_dockerfile_is_a_launcher_and_an_sdk_container_with_this_beam():
    text = dockerfile()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms[-1] == "gcr.io/dataflow-templates-base/python311-template-launcher-base"
    assert f"ARG BEAM_VERSION={beam.__version__}" in text  # workers run the Beam the tests run
    assert "COPY --from=beam /opt/apache/beam /opt/apache/beam" in text
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
    py_file = re.search(r"^ENV FLEX_TEMPLATE_PYTHON_PY_FILE=(\S+)", text, re.M).group(1)
    copied = dict(re.findall(r"^COPY (?!--from)(\S+) (\S+)$", text, re.M))
    assert copied["deploy/dataflow/launch.py"] == Path(py_file).name  # WORKDIR /template
    assert "WORKDIR /template" in text and py_file == "/template/launch.py"
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which is not in the repo"


def test_the_image_installs_every_package_of_memgen():
    """The image (and a Dataflow worker's pip install) installs only the packages pyproject names:
    one left out (memgen/readers/ when readers.py became a package) is missing there, while the
    editable install the tests run on finds it."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    # (rglob does not follow a checkout's links memgen/pipelines, memgen/schemas: mapped, and listed)
    inits = (ROOT / "memgen").rglob("__init__.py")
    packages = {".".join(init.parent.relative_to(ROOT).parts) for init in inits}
    assert packages - listed == set()


def test_cloud_build_builds_the_dockerfile_with_what_build_sh_substitutes():
    """cloudbuild.yaml was read by nothing here: a substitution build.sh does not pass, or a
    build argument the Dockerfile does not declare, shows only in Cloud Build."""
    import yaml

    config = yaml.safe_load((DATAFLOW / "cloudbuild.yaml").read_text())
    (step,) = config["steps"]
    args = step["args"]
    assert step["name"] == "gcr.io/cloud-builders/docker" and args[0] == "build"
    assert (ROOT / args[args.index("-f") + 1]).is_file() and args[-1] == "."  # built from the root
    built = args[args.index("-t") + 1]
    assert config["images"] == [built]  # the image built is the one pushed
    used = set(re.findall(r"\$\{(_[A-Z]+)\}", (DATAFLOW / "cloudbuild.yaml").read_text()))
    passed = set(re.findall(r"(_[A-Z]+)=", (DATAFLOW / "build.sh").read_text()))
    assert used == passed == {"_JOB", "_EXTRAS", "_IMAGE"}
    # the image knows its own name: the workers' image of a launch that names none (launch.py)
    assert args[args.index("IMAGE=${_IMAGE}") - 1] == "--build-arg"
    assert "ENV MEMGEN_IMAGE=${IMAGE}" in dockerfile()
    build_args = {args[i + 1].split("=", 1)[0] for i, a in enumerate(args) if a == "--build-arg"}
    assert build_args <= set(re.findall(r"^ARG (\w+)", dockerfile(), re.M))


def test_build_script_builds_one_template_per_job_with_its_metadata():
    text = (DATAFLOW / "build.sh").read_text()
    assert 'TEMPLATE="gs://$BUCKET/templates/memgen-$JOB.json"' in text
    assert '--metadata-file "$HERE/$JOB/metadata.json"' in text
    assert "gcloud dataflow flex-template build" in text and "--sdk-language PYTHON" in text
    case_jobs = set(re.findall(r"^\s+([a-z|]+)\) EXTRAS=", text, re.M)[0].split("|")) | {"evaluate"}
    assert case_jobs == set(JOBS) == {p.name for p in DATAFLOW.iterdir() if p.is_dir()}


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
@pytest.mark.parametrize("script", ["dataflow/build.sh", "scheduler/create.sh"])
def test_shell_scripts_parse(script):
    done = subprocess.run(["bash", "-n", str(DEPLOY / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_build_script_refuses_an_unknown_job():
    env = {**os.environ, "PROJECT": "p", "REGION": "r", "REPOSITORY": "d", "BUCKET": "b"}
    done = subprocess.run(["bash", str(DATAFLOW / "build.sh"), "transmogrify"], capture_output=True,
                          text=True, env=env)
    assert done.returncode == 2 and "unknown job transmogrify" in done.stderr


# --- Cloud Scheduler --------------------------------------------------------------------

def scheduler_body() -> dict:
    """memorize-nightly.json as create.sh sends it (envsubst), then as the launcher renders it."""
    text = (DEPLOY / "scheduler" / "memorize-nightly.json").read_text()
    for name, value in ENVSUBST.items():
        text = text.replace("${" + name + "}", value)
    return json.loads(text)


def test_scheduler_fills_exactly_the_variables_of_its_body():
    text = (DEPLOY / "scheduler" / "memorize-nightly.json").read_text()
    in_body = set(re.findall(r"\$\{(\w+)\}", text)) - {"YESTERDAY"}
    create = (DEPLOY / "scheduler" / "create.sh").read_text()
    substituted = set(re.findall(r"\$\{(\w+)\}", re.search(r"envsubst '([^']+)'", create).group(1)))
    assert in_body == substituted == set(ENVSUBST)
    assert "flexTemplates:launch" in create and '--schedule "0 2 * * *"' in create


def test_scheduler_launches_memorize_nightly_over_the_new_shards():
    launch = scheduler_body()["launchParameter"]
    assert launch["containerSpecGcsPath"] == "gs://memgen-data/templates/memgen-memorize.json"
    assert re.fullmatch(PipelineOptionsValidator.JOB_PATTERN, launch["jobName"])
    assert set(launch["environment"]) <= RUNTIME_ENVIRONMENT
    params = launch["parameters"]
    # each night needs its own shards and its own memory: a finished memory is refused
    assert "${YESTERDAY}" in params["input"] and "${YESTERDAY}" in params["memory"]
    rendered = dict(zip(params, (a.split("=", 1)[1] for a in load_launch().render(
        [f"--{k}={v}" for k, v in params.items()], RUN_DATE)), strict=True))
    check_parameters("memorize", rendered)
    config = to_config("memorize", rendered)
    assert config.inputs == (f"gs://memgen-data/shards/{DS}/*.tar",)
    assert config.memory == f"gs://memgen-data/memory/{DS}"


def check_parameters(job: str, values: dict[str, str]) -> None:
    params = parameters(job)
    assert set(values) <= set(params), f"{job}: unknown parameters {set(values) - set(params)}"
    missing = {n for n, p in params.items() if not p["isOptional"]} - set(values)
    assert not missing, f"{job}: required parameters missing: {missing}"
    for name, value in values.items():
        assert matches(params[name], value), f"{job}: {name}={value!r} fails its regexes"


# --- Airflow DAG ------------------------------------------------------------------------

DAG_FILE = DEPLOY / "airflow" / "memgen_nightly.py"


def render_jinja(value: str) -> str:
    """The few Airflow macros the DAG uses: ds, ds_nodash, var.value.NAME (or .get)."""
    value = re.sub(r"\{\{ ds \}\}", DS, value)
    value = re.sub(r"\{\{ ds_nodash \}\}", DS.replace("-", ""), value)
    variable = r"\{\{ var\.value\.(?:(\w+)|get\('(\w+)', '[^']*'\)) \}\}"  # NAME, or get('NAME', default)
    value = re.sub(variable, lambda m: AIRFLOW_VARIABLES[m.group(1) or m.group(2)], value)
    assert "{{" not in value and "{%" not in value, f"unrendered template in {value!r}"
    return value


def rendered(obj):
    if isinstance(obj, dict):
        return {k: rendered(v) for k, v in obj.items()}
    return render_jinja(obj) if isinstance(obj, str) else obj


def dag_tree() -> ast.Module:
    return ast.parse(DAG_FILE.read_text(), filename=str(DAG_FILE))


def dag_launches() -> dict[str, dict]:
    """job -> the rendered launch body of its task, evaluated from the DAG's own expressions."""
    tree = dag_tree()
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            constants[node.targets[0].id] = eval(  # noqa: S307 - the DAG's own string constants
                compile(ast.Expression(node.value), str(DAG_FILE), "eval"), {"__builtins__": {}}, constants)
    body_template = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "launch")
    launches = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "launch":
            job = ast.literal_eval(call.args[0])
            params = eval(compile(ast.Expression(call.args[1]), str(DAG_FILE), "eval"),  # noqa: S307
                          {"__builtins__": {}}, constants)
            body_node = next(k.value for k in ast.walk(body_template)
                             if isinstance(k, ast.keyword) and k.arg == "body")
            body = eval(compile(ast.Expression(body_node), str(DAG_FILE), "eval"),  # noqa: S307
                        {"__builtins__": {}}, {**constants, "job": job, "parameters": params})
            launches[job] = rendered(body)
    return launches


def test_dag_chains_memorize_sample_evaluate():
    chains = [n for n in ast.walk(dag_tree()) if isinstance(n, ast.Expr) and isinstance(n.value, ast.BinOp)]
    names = []
    for chain in chains:
        node, order = chain.value, []
        while isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift):
            order.insert(0, node.right.id)
            node = node.left
        names.append([node.id, *order])
    assert names == [["memorize", "sample", "evaluate"]]
    assigned = {n.targets[0].id: ast.literal_eval(n.value.args[0]) for n in ast.walk(dag_tree())
                if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                and getattr(n.value.func, "id", None) == "launch"}
    assert assigned == {"memorize": "memorize", "sample": "sample", "evaluate": "evaluate"}
    operator = [n for n in ast.walk(dag_tree()) if isinstance(n, ast.ImportFrom)
                and n.module == "airflow.providers.google.cloud.operators.dataflow"]
    assert [a.name for a in operator[0].names] == ["DataflowStartFlexTemplateOperator"]


def test_dag_ds_is_the_day_that_ended_in_airflow_2_and_3():
    """render_jinja's ds is the day before the run: true of a data-interval timetable only
    (Airflow 3 reads a cron string as a CronTriggerTimetable, whose ds is the run's own day)."""
    tree = dag_tree()
    (dag,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DAG"]
    schedule = next(k.value for k in dag.keywords if k.arg == "schedule")
    assert isinstance(schedule, ast.Call) and schedule.func.id == "CronDataIntervalTimetable"
    assert [ast.literal_eval(a) for a in schedule.args] == ["0 2 * * *"]
    imports = {a.name: n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert imports["CronDataIntervalTimetable"] == "airflow.timetables.interval"


@pytest.mark.parametrize("job", JOBS)
def test_dag_launches_real_templates_with_real_parameters(job):
    job_module(job)
    launch = dag_launches()[job]["launchParameter"]
    assert launch["containerSpecGcsPath"] == f"gs://memgen-data/templates/memgen-{job}.json"
    assert re.fullmatch(PipelineOptionsValidator.JOB_PATTERN, launch["jobName"]), launch["jobName"]
    assert set(launch["environment"]) <= RUNTIME_ENVIRONMENT
    assert launch["environment"]["sdkContainerImage"] == \
        f"europe-west4-docker.pkg.dev/memgen-prod/images/memgen-{job}:abc123"  # build.sh's IMAGE
    check_parameters(job, launch["parameters"])
    to_config(job, launch["parameters"])


def test_dag_passes_each_output_to_the_next_job():
    launches = {job: b["launchParameter"]["parameters"] for job, b in dag_launches().items()}
    assert launches["memorize"]["input"] == f"gs://memgen-data/shards/{DS}/*.tar"
    assert launches["sample"]["memory"] == launches["memorize"]["memory"] == f"gs://memgen-data/memory/{DS}"
    assert launches["evaluate"]["memory"] == launches["memorize"]["memory"]
    assert launches["evaluate"]["sample"] == launches["sample"]["out"]
