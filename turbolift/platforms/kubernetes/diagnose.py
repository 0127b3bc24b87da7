"""Why a run's pods are not ready, in words a user can act on.

A pure function over what the API reports (the Deployment, the run's pods,
Warning events, the last output of crashed containers), so that the
platform's timeout error names the cause: an image that cannot be pulled, a
worker that crashes at start, a pod no node can take, pods that may not be
created at all.
"""
from __future__ import annotations

from typing import Optional

from .objects import RUN_ID_LABEL

IMAGE_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull",
                 "RegistryUnavailable", "ImageInspectError"}
CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError", "StartError"}
MAX_EVENTS = 6
MAX_LOG_LINES = 12

HINTS = {
    "image": "check the image name and tag, that it was pushed, and that the cluster may pull it "
             "(imagePullSecrets; on kind: `kind load docker-image IMAGE`; "
             "on minikube: `minikube image load IMAGE`)",
    "crash": "the worker exits right after starting; its last output is shown. "
             "Is `turbolift` installed in the image (build it from the project's Dockerfile)?",
    "oom": "the worker ran out of memory: raise the memory limit (resources=..., URL: ?memory=...)",
    "config": "the container could not be created as specified; with token_secret=..., check that the "
              "Secret exists in this namespace and holds the token under the expected key",
    "unschedulable": "no node can take the pod: lower the requests (resources=..., "
                     "URL: ?cpu=...&memory=...), fewer replicas, or add nodes",
    "unready": "the container runs but its gRPC health check fails; does the image run `turbolift worker`, "
               "and is the cluster at least Kubernetes 1.27 (native gRPC probes)?",
    "create": "the Deployment may not create pods (a quota, a LimitRange or Pod Security admission); "
              "the message above says which",
}


def _pod_problem(pod: dict, log: Optional[str]) -> tuple[str, str, Optional[str]]:
    """(what is wrong, hint key, detail) for one pod."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return (f"cannot be scheduled ({condition.get('reason', 'Unschedulable')}): "
                    f"{condition.get('message', '')}".rstrip(": "), "unschedulable", None)
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason", "")
        message = waiting.get("message", "")
        last = (container.get("lastState") or {}).get("terminated") or {}
        if reason in IMAGE_REASONS:
            return (f"cannot pull image {container.get('image', '')!r} ({reason}): {message}".rstrip(": "),
                    "image", None)
        crashed = bool(last) and last.get("exitCode", 0) != 0 and not container.get("ready")
        if reason == "CrashLoopBackOff" or crashed:
            why = last.get("reason") or reason or "Error"
            text = (f"crashes at start ({reason or why}): exit code {last.get('exitCode', '?')} ({why}), "
                    f"{container.get('restartCount', 0)} restarts")
            return text, "oom" if why == "OOMKilled" else "crash", log
        if reason in CONFIG_REASONS:
            return f"container cannot start ({reason}): {message}".rstrip(": "), "config", None
        if reason:
            return f"container waiting ({reason}){': ' + message if message else ''}", "", None
        if "running" in state and not container.get("ready"):
            return "running but not ready", "unready", None
    phase = status.get("phase", "Pending")
    return f"{phase.lower()}, not ready yet", "", None


def _deployment_problems(deployment: Optional[dict]) -> list[str]:
    found = []
    for condition in ((deployment or {}).get("status") or {}).get("conditions") or []:
        failing = (condition.get("type") == "ReplicaFailure" and condition.get("status") == "True") or (
            condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded")
        if failing:
            found.append(f"{condition.get('reason', condition['type'])}: {condition.get('message', '')}")
    return found


def report(*, run_id: str, namespace: str, ready: int, wanted: int, waited: float,
           deployment: Optional[dict], pods: list[dict], events: list[dict],
           logs: Optional[dict[str, str]] = None, api_error: Optional[str] = None) -> str:
    """The message of the error raised when a run's workers are not ready in time."""
    logs = logs or {}
    lines = [f"{ready} of {wanted} Kubernetes workers of run {run_id} in namespace {namespace} "
             f"ready after {waited:.0f}s."]
    hints: list[str] = []

    def hint(key: str) -> None:
        if key and HINTS[key] not in hints:
            hints.append(HINTS[key])

    if api_error:
        lines.append(f"  - following the run's endpoints failed: {api_error}")
    problems = _deployment_problems(deployment)
    for problem in problems:
        lines.append(f"  - deployment: {problem}")
        hint("create")
    if deployment is not None and not pods and not problems:
        lines.append("  - no pods exist yet for the deployment")
    grouped: dict[tuple[str, Optional[str]], list[str]] = {}
    for pod in pods:
        name = pod.get("metadata", {}).get("name", "?")
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        problem, key, log = _pod_problem(pod, logs.get(name))
        grouped.setdefault((problem, log), []).append(name)
        hint(key)
    for (problem, log), names in grouped.items():
        who = f"pod {names[0]}" if len(names) == 1 else f"pods {', '.join(names)}"
        lines.append(f"  - {who}: {problem}")
        if log:
            tail = log.rstrip().splitlines()[-MAX_LOG_LINES:]
            lines.append("    last output:")
            lines.extend(f"      | {line}" for line in tail)
    shown = set()
    for event in events[-MAX_EVENTS * 4:]:
        text = f"{event.get('reason', '')}: {event.get('message', '')}".strip()
        if text in shown:
            continue
        shown.add(text)
        involved = event.get("involvedObject") or {}
        lines.append(f"  - event on {involved.get('kind', '').lower()} {involved.get('name', '')}: {text}")
        if len(shown) >= MAX_EVENTS:
            break
    lines.extend(f"  hint: {text}" for text in hints)
    lines.append(f"  inspect: kubectl -n {namespace} describe pods -l {RUN_ID_LABEL}={run_id}")
    return "\n".join(lines)
