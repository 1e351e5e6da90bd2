"""The end-of-run summary table printed by `memgen memorize` (from manifest.json)."""

from __future__ import annotations

from typing import Any

from memgen.memory import join, open_table


def memorize_summary(manifest: dict[str, Any]) -> str:
    c = manifest["counts"]
    known = manifest.get("options", {}).get("known")
    of_known = [("duplicates of --known", c.get("duplicates_known", 0))] if known else []
    rows = [
        ("shards", manifest["shards"]),
        ("records in", c["records_in"]),
        ("unique images", c["images"]),
        ("exact duplicates", c["duplicates_exact"]),
        ("near duplicates", c["duplicates_near"]),
        *of_known,
        ("rejects", c["rejects"]),
        *((f"  {reason}", n) for reason, n in c["rejects_by_reason"].items()),
        ("image bytes kept", c["image_bytes"]),
        ("time (s)", f"{manifest['seconds']:.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value:>12}" for name, value in rows]
    check = "balanced" if manifest["balanced"] else "NOT BALANCED"
    lines.append(f"{manifest['equation']}: {check}")
    components = (manifest.get("near_dedup") or {}).get("components") or {}
    finishing = components.get("finishing")  # absent from older manifests
    # else only the manifest tells: the rounds ran out with every component's labels agreeing
    if components.get("converged") is False and (finishing is None or finishing["links"]):
        joined = f" ({finishing['links']} links of {finishing['labels']} labels)" if finishing else ""
        lines.append(f"near duplicates: the connected components did not converge in "
                     f"{components['max_rounds']} rounds; one worker joined the rest of them{joined} "
                     "(manifest near_dedup.components)")
    return "\n".join(lines)


def no_image_kept(memory: str, manifest: dict[str, Any]) -> str | None:
    """For a memory that keeps no image but rejects: its first reject's reason and message, and
    where the others are (an error page saved as cat.jpg given as the input: exit 0, and the summary's
    counts said nothing of why); None for any other memory."""
    counts = manifest["counts"]
    if counts["images"] or not counts["rejects"]:
        return None
    first = open_table(memory, "rejects").head(1, columns=["source", "error_type", "message"]).to_pylist()
    if not first:
        return None
    said = first[0]
    return (f"no image kept; the first reject, {said['source']}: {said['error_type']}: {said['message']}"
            f" (all in {join(memory, 'rejects')})")
