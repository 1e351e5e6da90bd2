"""Airflow DAG: nightly memorize -> sample -> evaluate, each a memgen Dataflow Flex Template.

Each night's run works on the shards of its logical date ({{ ds }}, the day that just
ended): gs://BUCKET/shards/DS/*.tar -> memory/DS -> samples/DS -> reports/DS. That is the
start of a data interval: the schedule is a CronDataIntervalTimetable, as a cron string was
in Airflow 2 (Airflow 3 makes a cron string a CronTriggerTimetable, whose ds is the run's own
day: today's half-filled folder). Parameter
names are the jobs' flags (deploy/dataflow/JOB/metadata.json); the templates and images
come from deploy/dataflow/build.sh. Airflow Variables: memgen_project, memgen_region,
memgen_bucket, memgen_repository (build.sh's REPOSITORY; default "memgen"), memgen_image_tag,
memgen_worker_sa. Needs apache-airflow-providers-google and
apache-airflow-providers-apache-beam (the google provider's Dataflow operators import it).
"""

from __future__ import annotations

import pendulum
from airflow import DAG
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator
from airflow.timetables.interval import CronDataIntervalTimetable

PROJECT = "{{ var.value.memgen_project }}"
REGION = "{{ var.value.memgen_region }}"
BUCKET = "gs://{{ var.value.memgen_bucket }}"
IMAGES = ("{{ var.value.memgen_region }}-docker.pkg.dev/{{ var.value.memgen_project }}/"
          "{{ var.value.get('memgen_repository', 'memgen') }}")
TAG = "{{ var.value.memgen_image_tag }}"
MEMORY = BUCKET + "/memory/{{ ds }}"
SAMPLE = BUCKET + "/samples/{{ ds }}"
SAMPLE_SIZE = "10000"
# evaluate labels a sample of the memory, not every image (deploy/README.md: a census of 10^9
# images is ~3,250 vCPU-h), and leaves out the EfficientNet distances, which would run the
# model on every memory image: "true" adds them at that cost
CONCEPT_SAMPLE_SIZE = "100000"
EMBEDDING = "false"


def launch(job: str, parameters: dict[str, str]) -> DataflowStartFlexTemplateOperator:
    """A task that launches memgen-JOB's Flex Template and waits for the Dataflow job to end."""
    return DataflowStartFlexTemplateOperator(
        task_id=job,
        project_id=PROJECT,
        location=REGION,
        body={
            "launchParameter": {
                "jobName": f"memgen-{job}-{{{{ ds_nodash }}}}",
                "containerSpecGcsPath": f"{BUCKET}/templates/memgen-{job}.json",
                "parameters": parameters,
                "environment": {
                    "tempLocation": f"{BUCKET}/tmp",
                    "sdkContainerImage": f"{IMAGES}/memgen-{job}:{TAG}",
                    "serviceAccountEmail": "{{ var.value.memgen_worker_sa }}",
                },
            }
        },
        wait_until_finished=True,
    )


with DAG(
    dag_id="memgen_nightly",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": pendulum.duration(minutes=15)},
    tags=["memgen"],
) as dag:
    memorize = launch("memorize", {"input": BUCKET + "/shards/{{ ds }}/*.tar", "memory": MEMORY})
    sample = launch("sample", {"memory": MEMORY, "n": SAMPLE_SIZE, "seed": "{{ ds_nodash }}",
                               "out": SAMPLE, "format": "webdataset"})
    evaluate = launch("evaluate", {"memory": MEMORY, "sample": SAMPLE, "classifier": "efficientnet-lite0",
                                   "sample_size": CONCEPT_SAMPLE_SIZE, "seed": "{{ ds_nodash }}",
                                   "embedding": EMBEDDING, "out": BUCKET + "/reports/{{ ds }}"})
    memorize >> sample >> evaluate
