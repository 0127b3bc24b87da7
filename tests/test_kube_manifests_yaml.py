"""``turbolift kube manifests`` writes every string as a string, whatever it looks like.

A run id such as ``0123456789`` or ``1234567e89`` once came out unquoted:
PyYAML reads both back as strings, but kubectl's YAML reader (Go, YAML 1.1
rules) reads them as numbers and refuses them as label values ("cannot
unmarshal number into Go struct field ObjectMeta.metadata.labels of type
string"). An all-digit id comes out of the run-id generator about once in a
hundred runs. These tests render objects full of such values and read them
back three ways: with PyYAML's YAML 1.1 loader; with that loader taught the
plain scalars go-yaml takes for numbers and booleans (``GoYamlRules``: PyYAML
alone reads ``0123456789`` as a string, so on its own it cannot show the
bug); and with kubectl itself where a ``kubectl`` binary is on PATH.

kubectl, offline: ``kubectl create --dry-run=client -f -`` still asks a server
for its API discovery to map each kind to a resource (with or without
``--validate=false``), so without a cluster it fails before decoding
anything. ``kubectl label --local -f - -o json`` decodes every document into
kubectl's typed Go structs, as ``create`` and ``apply`` do, entirely
offline, and prints them back: that is the check used here. Removing a label
no object has (``turbolift.dev/kubectl-check-``) leaves the objects as they
are, so the output must equal the input exactly.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from turbolift.kubernetes import Kubernetes, resources_for
from turbolift.platforms.kubernetes import command as kube_command

# Every one is a valid run id, and every one but the last is something other
# than a string to some YAML reader: decimal, octal-looking and exponent
# numbers, hex, YAML 1.1 booleans and null.
AWKWARD_RUN_IDS = ["0123456789", "1234567e89", "1e3", "1e-5", "0x1f", "0o17", "007", "123", "true",
                   "null", "yes", "no", "on", "off", "y", "n", "abc"]
# Secret names may hold dots, so they can look like floats and version numbers too.
DOTTED_SECRETS = ["1.5", "10.0.0.1", "1e3.5", "team.tokens.v1"]
IMAGE = "registry.example:5000/team/worker:0123"


def objects_for(run_id: str, token_secret: str | None = None, token_key: str = "token") -> list[dict]:
    """A run's objects, with numeric-looking quantities and an autoscaler on top of the odd names."""
    return Kubernetes("team-a", image=IMAGE, run_id=run_id, token="0123456789" if not token_secret else None,
                      token_secret=token_secret, token_key=token_key, resources=resources_for("1", "1e3"),
                      min_replicas=1, max_replicas=3).objects()


CASES = ([pytest.param(run_id, None, "token", id=f"run-id={run_id}") for run_id in AWKWARD_RUN_IDS]
         + [pytest.param("0123456789", secret, key, id=f"token-secret={secret},key={key}")
            for secret, key in zip(DOTTED_SECRETS, ["1", "true", "0.5", "token"])])


def strings_in(value: object) -> list[str]:
    """Every string in a JSON-like value, mapping keys included."""
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in [*strings_in(key), *strings_in(item)]]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return [value] if isinstance(value, str) else []


class GoYamlRules(yaml.SafeLoader):
    """PyYAML's safe loader, also reading as non-strings the plain scalars go-yaml does.

    go-yaml (under kubectl's sigs.k8s.io/yaml) takes for a number whatever Go's
    ``strconv`` parses once underscores are dropped, so leading zeros
    (``0123456789``), exponents without a dot or sign (``1234567e89``) and
    ``0o``/``0b`` prefixes too, and for a boolean also ``y`` and ``n``. Such a
    scalar becomes a ``("go-yaml would not read a string", text)`` tuple
    here, which equals no string in the objects.
    """


GO_NUMBER = re.compile(r"""(?: [-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?
                             | [-+]?0[xX][0-9a-fA-F_]+ | [-+]?0[oO][0-7_]+ | [-+]?0[bB][01_]+ )\Z""", re.X)
GO_TAG = "tag:turbolift.test,2025:not-a-string-to-go-yaml"
GoYamlRules.add_implicit_resolver(GO_TAG, GO_NUMBER, list("-+.0123456789"))
GoYamlRules.add_implicit_resolver(GO_TAG, re.compile(r"[yYnN]\Z"), list("yYnN"))
GoYamlRules.add_constructor(GO_TAG, lambda loader, node: ("go-yaml would not read a string",
                                                          loader.construct_scalar(node)))


@pytest.mark.parametrize("run_id, token_secret, token_key", CASES)
def test_yaml_loaders_read_back_exactly_the_objects(run_id, token_secret, token_key):
    objects = objects_for(run_id, token_secret, token_key)
    assert run_id in strings_in(objects)          # the awkward value is really in there, as a string
    text = kube_command.render(objects)
    assert list(yaml.safe_load_all(text)) == objects                  # YAML 1.1, as PyYAML reads it
    assert list(yaml.load_all(text, Loader=GoYamlRules)) == objects   # and as go-yaml would


def test_the_go_yaml_rules_see_what_plain_pyyaml_writes():
    """What PyYAML alone writes for an all-digit run id is not a string to go-yaml: the check above bites."""
    objects = objects_for("0123456789")
    unquoted = yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True)
    assert list(yaml.safe_load_all(unquoted)) == objects
    assert list(yaml.load_all(unquoted, Loader=GoYamlRules)) != objects


def test_the_command_line_prints_awkward_values_as_strings(tmp_path):
    """The same through ``turbolift kube manifests``, as a user pipes it into kubectl."""
    token_file = tmp_path / "token"
    token_file.write_text("1234567e89\n")
    result = subprocess.run(
        [sys.executable, "-m", "turbolift", "kube", "manifests", "--image", IMAGE, "--run-id", "0123456789",
         "--cpu", "1", "--memory", "1e3", "--token-file", str(token_file)],
        capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = list(yaml.safe_load_all(result.stdout))
    assert [o["metadata"]["labels"]["turbolift.dev/run-id"] for o in printed] == ["0123456789"] * 3
    deployment = printed[2]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "1", "memory": "1e3"}


# -- kubectl --------------------------------------------------------------------------

def kubectl_or_skip() -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on PATH: the client-side check of the manifests needs one "
                    "(Debian: apt-get install kubernetes-client; .ci/run installs it when it can)")
    return kubectl


def kubectl_reads(text: str, kubectl: str, home: Path) -> subprocess.CompletedProcess:
    """What kubectl decodes from ``text``: its typed objects back as JSON, never contacting a server.

    ``KUBECONFIG`` points at an empty file so that no cluster configured on
    this machine is read (``--local`` talks to none anyway).
    """
    kubeconfig = home / "kubeconfig"
    kubeconfig.write_text("")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}
    command = [kubectl, "label", "--local", "-f", "-", "-o", "json", "turbolift.dev/kubectl-check-"]
    return subprocess.run(command, input=text, capture_output=True, text=True, env=env, timeout=120)


def json_documents(text: str) -> list[dict]:
    """kubectl prints one JSON document per object, one after the other."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


@pytest.mark.parametrize("run_id, token_secret, token_key", CASES)
def test_kubectl_reads_back_exactly_the_objects(run_id, token_secret, token_key, tmp_path):
    kubectl = kubectl_or_skip()
    objects = objects_for(run_id, token_secret, token_key)
    result = kubectl_reads(kube_command.render(objects), kubectl, tmp_path)
    assert result.returncode == 0, result.stderr
    assert json_documents(result.stdout) == objects


def test_the_kubectl_check_catches_what_plain_pyyaml_writes(tmp_path):
    """The check is not vacuous: PyYAML's own output for an all-digit run id is what kubectl refused."""
    kubectl = kubectl_or_skip()
    objects = objects_for("0123456789")
    unquoted = yaml.safe_dump_all(objects, sort_keys=False, explicit_start=True)
    assert "turbolift.dev/run-id: 0123456789\n" in unquoted
    result = kubectl_reads(unquoted, kubectl, tmp_path)
    assert result.returncode != 0 and "unable to decode" in result.stderr, result.stderr
