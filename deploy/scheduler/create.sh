#!/usr/bin/env bash
# Create (or replace) the Cloud Scheduler job that launches the memorize Flex Template
# every night at 02:00 UTC over the previous day's shard folder.
#
# usage:  PROJECT=p REGION=r BUCKET=b IMAGE=<memorize image from build.sh> \
#         WORKER_SA=dataflow-worker@p.iam.gserviceaccount.com \
#         SCHEDULER_SA=memgen-scheduler@p.iam.gserviceaccount.com deploy/scheduler/create.sh
#
# The body is memorize-nightly.json with $BUCKET, $IMAGE and $WORKER_SA filled in here;
# ${YESTERDAY} stays literal and is replaced by the template's launcher at launch time.
# SCHEDULER_SA needs roles/dataflow.developer and roles/iam.serviceAccountUser on WORKER_SA.
set -euo pipefail
: "${PROJECT:?}" "${REGION:?}" "${BUCKET:?}" "${IMAGE:?}" "${WORKER_SA:?}" "${SCHEDULER_SA:?}"
HERE=$(cd "$(dirname "$0")" && pwd)
BODY=$(mktemp)
trap 'rm -f "$BODY"' EXIT
export BUCKET IMAGE WORKER_SA
envsubst '${BUCKET} ${IMAGE} ${WORKER_SA}' < "$HERE/memorize-nightly.json" > "$BODY"

# re-running replaces the job (an `update` takes other flag names than `create`)
if gcloud scheduler jobs describe memgen-memorize-nightly --project "$PROJECT" --location "$REGION" \
    >/dev/null 2>&1; then
  gcloud scheduler jobs delete memgen-memorize-nightly --project "$PROJECT" --location "$REGION" --quiet
fi
gcloud scheduler jobs create http memgen-memorize-nightly \
  --project "$PROJECT" --location "$REGION" \
  --schedule "0 2 * * *" --time-zone "Etc/UTC" \
  --uri "https://dataflow.googleapis.com/v1b3/projects/$PROJECT/locations/$REGION/flexTemplates:launch" \
  --http-method POST \
  --headers "Content-Type=application/json" \
  --message-body-from-file "$BODY" \
  --oauth-service-account-email "$SCHEDULER_SA" \
  --oauth-token-scope "https://www.googleapis.com/auth/cloud-platform" \
  --attempt-deadline 10m --max-retry-attempts 3 --min-backoff 10m
