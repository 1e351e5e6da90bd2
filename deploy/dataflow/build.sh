#!/usr/bin/env bash
# Build one job's Flex Template: its container image (Cloud Build, pushed to Artifact
# Registry) and its template spec (gs://$BUCKET/templates/memgen-JOB.json) with the
# job's metadata.json (parameter names = the job's flags).
#
# usage:  PROJECT=p REGION=r REPOSITORY=docker-repo BUCKET=b deploy/dataflow/build.sh JOB
#         JOB = memorize | sample | evaluate;  TAG defaults to the git commit.
set -euo pipefail

JOB=${1:?usage: build.sh memorize|sample|evaluate}
: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${REPOSITORY:?set REPOSITORY}" "${BUCKET:?set BUCKET}"
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
case "$JOB" in
  memorize|sample) EXTRAS=cloud ;;
  evaluate) EXTRAS=cloud,vision ;;
  *) echo "build.sh: unknown job $JOB (memorize, sample or evaluate)" >&2; exit 2 ;;
esac
TAG=${TAG:-$(git -C "$ROOT" rev-parse --short=12 HEAD)}
IMAGE="$REGION-docker.pkg.dev/$PROJECT/$REPOSITORY/memgen-$JOB:$TAG"
TEMPLATE="gs://$BUCKET/templates/memgen-$JOB.json"

# ^;^ makes ';' the separator, since EXTRAS may hold a comma (gcloud topic escaping)
gcloud builds submit "$ROOT" --project "$PROJECT" --region "$REGION" \
  --config "$HERE/cloudbuild.yaml" \
  --substitutions "^;^_JOB=$JOB;_EXTRAS=$EXTRAS;_IMAGE=$IMAGE"

gcloud dataflow flex-template build "$TEMPLATE" --project "$PROJECT" \
  --image "$IMAGE" \
  --sdk-language PYTHON \
  --metadata-file "$HERE/$JOB/metadata.json"

echo "template $TEMPLATE"
echo "image    $IMAGE   (the workers' image of launches that name none)"
