"""``turbolift kube``: the Kubernetes platform's objects for kubectl users, and cleanup.

::

    turbolift kube manifests [--namespace NS] [--image IMAGE] [--replicas N] [...]   print the objects
    turbolift kube cleanup [--namespace NS] (--run-id ID | --all)                     delete leftovers

``manifests`` prints exactly the objects ``Kubernetes(...)`` would create
with the same options (it builds them through the same class), as YAML when
PyYAML is installed (it comes with the ``kubernetes`` extra) and otherwise as
JSON documents separated by ``---``, which is YAML too. It needs no cluster.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
from typing import Optional, Sequence

from ...errors import ClusterError, ConfigurationError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turbolift kube",
                                     description="Kubernetes objects of turbolift runs.")
    commands = parser.add_subparsers(dest="command", metavar="{manifests,cleanup}")
    commands.required = True

    manifests = commands.add_parser(
        "manifests", help="print the objects of a run for kubectl, Helm or GitOps",
        description="Print the objects a Kubernetes run creates (Secret, headless Service, Deployment, "
                    "optional HorizontalPodAutoscaler). Apply them, then attach with "
                    "--cluster 'k8s://NS?attach=1&run_id=ID'.")
    manifests.add_argument("--namespace", "-n", default="default", help="namespace (default: default)")
    manifests.add_argument("--image", default=os.environ.get("TURBOLIFT_IMAGE"),
                           help="the worker image (default: $TURBOLIFT_IMAGE)")
    manifests.add_argument("--replicas", type=int, default=2, help="worker pods (default 2)")
    manifests.add_argument("--cpu", help="CPU request and limit of each pod (default: request 500m, limit 1)")
    manifests.add_argument("--memory", help="memory request and limit (default: request 512Mi, limit 1Gi)")
    manifests.add_argument("--min-replicas", type=int, help="autoscale on CPU from this many pods...")
    manifests.add_argument("--max-replicas", type=int, help="...up to this many")
    manifests.add_argument("--cpu-utilization", type=int, default=80, help="autoscaling target in percent")
    manifests.add_argument("--token-secret", help="use this existing Secret for the token (none is printed)")
    manifests.add_argument("--token-key", default="token", help="the token's key in the Secret")
    manifests.add_argument("--token-file", help="put this token in the printed Secret (default: a fresh one)")
    manifests.add_argument("--metrics-port", type=int, help="workers serve Prometheus metrics on this port; "
                           "pods are annotated for scraping (the image needs turbolift[metrics])")
    manifests.add_argument("--pull-policy", choices=("Always", "IfNotPresent", "Never"),
                           help="imagePullPolicy of the worker container")
    manifests.add_argument("--run-id", help="the run id every object is labelled with (default: a fresh one)")
    manifests.add_argument("--output", "-o", choices=("yaml", "json"), default="yaml",
                           help="yaml (a multi-document stream) or json (one List object)")

    cleanup = commands.add_parser(
        "cleanup", help="delete the objects of crashed runs",
        description="Delete the Deployments, Services, Secrets and autoscalers labelled with a run id "
                    "(or of every turbolift run, running ones included, with --all).")
    cleanup.add_argument("--namespace", "-n", default="default", help="namespace (default: default)")
    which = cleanup.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", help="the run to delete")
    which.add_argument("--all", action="store_true", help="every turbolift run in the namespace")
    cleanup.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    cleanup.add_argument("--context", help="kubeconfig context (default: the current one)")
    return parser


# A string is written plain (unquoted) only when it is a word that no YAML
# reader takes for anything but a string: a letter, then letters, digits and
# ``. _ / -``, and none of YAML 1.1's booleans and nulls. Everything else is
# double-quoted. PyYAML on its own quotes only what *its* resolver would read
# as another type, and its resolver is narrower than other readers': it takes
# ``0123456789`` and ``1234567e89`` for strings, while kubectl's YAML reader
# (Go) reads them as numbers and then refuses them as label values.
_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9._/-]*\Z")
_YAML_WORDS = frozenset({"y", "yes", "n", "no", "true", "false", "on", "off", "null"})


@functools.lru_cache(maxsize=None)
def _yaml_dumper() -> type:
    """A ``yaml.SafeDumper`` whose every string, key or value, reads back as a string in any reader."""
    import yaml

    class StringsStayStrings(yaml.SafeDumper):
        pass

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        plain = _PLAIN.match(value) is not None and value.lower() not in _YAML_WORDS
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=None if plain else '"')

    StringsStayStrings.add_representer(str, represent_str)
    return StringsStayStrings


def render(objects: list[dict], output: str = "yaml") -> str:
    """The text ``turbolift kube manifests`` prints for ``objects``.

    Every string comes out as a string whatever it looks like (``0123456789``,
    ``1e3``, ``true``), for PyYAML and for kubectl alike.
    """
    if output == "json":
        return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2) + "\n"
    try:
        import yaml
    except ImportError:
        # JSON is YAML: a stream of JSON documents is still a valid multi-document YAML file.
        return "".join(f"---\n{json.dumps(obj, indent=2)}\n" for obj in objects)
    # No line folding (width): a long token or command stays on one line, as it is in the object.
    return yaml.dump_all(objects, Dumper=_yaml_dumper(), sort_keys=False, explicit_start=True,
                         default_flow_style=False, width=1 << 30)


def manifests(opts: argparse.Namespace) -> int:
    from .platform import Kubernetes, resources_for

    if not opts.image:
        raise ConfigurationError("give the worker image: --image IMAGE (or set TURBOLIFT_IMAGE); build it "
                                 "from the project's Dockerfile and push it where the cluster can pull it")
    cluster = Kubernetes(
        namespace=opts.namespace, image=opts.image, replicas=opts.replicas,
        resources=resources_for(opts.cpu, opts.memory), token_secret=opts.token_secret,
        token_key=opts.token_key, token_file=opts.token_file, min_replicas=opts.min_replicas,
        max_replicas=opts.max_replicas, cpu_utilization=opts.cpu_utilization,
        image_pull_policy=opts.pull_policy, metrics_port=opts.metrics_port, run_id=opts.run_id)
    sys.stdout.write(render(cluster.objects(), opts.output))
    if not opts.token_secret:
        print(f"turbolift: the Secret {cluster.names.secret} holds the workers' token; callers attach with "
              f"--cluster 'k8s://{opts.namespace}?attach=1&run_id={cluster.run_id}', which reads it",
              file=sys.stderr)
    return 0


def cleanup(opts: argparse.Namespace, api: object = None) -> int:
    from .cleanup import cleanup as delete_run

    deleted = delete_run(opts.namespace, run_id=opts.run_id, all_runs=opts.all, kubeconfig=opts.kubeconfig,
                         context=opts.context, api=api)  # type: ignore[arg-type]
    for name in deleted:
        print(f"deleted {name}")
    if not deleted:
        which = "turbolift runs" if opts.all else f"objects of run {opts.run_id}"
        print(f"no {which} in namespace {opts.namespace}")
    return 0


def main(argv: Sequence[str], api: Optional[object] = None) -> int:
    """Run ``turbolift kube ARGV``; ``api`` replaces the Kubernetes API (tests)."""
    opts = _parser().parse_args(list(argv))
    try:
        if opts.command == "manifests":
            return manifests(opts)
        return cleanup(opts, api)
    except ConfigurationError as exc:
        print(f"turbolift kube {opts.command}: {exc}", file=sys.stderr)
        return 2
    except ClusterError as exc:
        print(f"turbolift kube {opts.command}: {exc}", file=sys.stderr)
        return 1
