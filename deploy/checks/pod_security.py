#!/usr/bin/env python3
"""Would the Kubernetes API admit every pod of a rendered manifest into a
namespace labelled pod-security.kubernetes.io/enforce=restricted?

Usage: pod_security.py RENDERED.yaml...

Checks each control of the restricted Pod Security Standard (v1.25+) on every
pod template (StatefulSet, Deployment, DaemonSet, ReplicaSet, Job, CronJob,
Pod), field by field, plus what cxpulse's chart promises beyond it: a
read-only root filesystem, no service links, no service account token, the
image's non-root user 65532. Exits 1 naming each violation.
"""

import sys

import yaml

# https://kubernetes.io/docs/concepts/security/pod-security-standards/
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                   "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
ALLOWED_SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t",
                         "container_engine_t"}
IMAGE_USER = 65532


def pod_templates(doc):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return [(doc.get("metadata") or {}, spec)]
    if kind in ("StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"):
        template = spec.get("template") or {}
        return [(template.get("metadata") or {}, template.get("spec") or {})]
    if kind == "CronJob":
        template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
        return [(template.get("metadata") or {}, template.get("spec") or {})]
    return []


def check_pod(name, metadata, pod):
    problems = []
    bad = problems.append
    pod_sc = pod.get("securityContext") or {}

    # Baseline controls (the restricted profile includes them).
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            bad(f"{field} is true")
    for volume in pod.get("volumes") or []:
        types = set(volume) - {"name"}
        if not types <= ALLOWED_VOLUMES:
            bad(f"volume {volume.get('name')!r} has type {sorted(types - ALLOWED_VOLUMES)}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad(f"sysctl {sysctl.get('name')} is not in the safe set")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        bad("pod windowsOptions.hostProcess is true")
    if (pod_sc.get("seLinuxOptions") or {}).get("type") not in ALLOWED_SELINUX_TYPES:
        bad("pod seLinuxOptions.type is not allowed")
    if any(k in (pod_sc.get("seLinuxOptions") or {}) for k in ("user", "role")):
        bad("pod seLinuxOptions sets user or role")
    for key, value in (metadata.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            bad(f"AppArmor annotation {key}={value}")
    if (pod_sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        bad("pod appArmorProfile.type is not RuntimeDefault or Localhost")

    # Restricted: pod level.
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_sc.get("runAsUser") == 0:
        bad("pod runAsUser is 0")

    containers = [("container", c) for c in pod.get("containers") or []]
    containers += [("initContainer", c) for c in pod.get("initContainers") or []]
    containers += [("ephemeralContainer", c) for c in pod.get("ephemeralContainers") or []]
    if not pod.get("containers"):
        bad("no containers")
    for role, container in containers:
        where = f"{role} {container.get('name')!r}"
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            bad(f"{where}: privileged")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                bad(f"{where}: hostPort {port['hostPort']}")
        if sc.get("procMount") not in (None, "Default"):
            bad(f"{where}: procMount {sc.get('procMount')}")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad(f"{where}: windowsOptions.hostProcess")
        if (sc.get("seLinuxOptions") or {}).get("type") not in ALLOWED_SELINUX_TYPES:
            bad(f"{where}: seLinuxOptions.type is not allowed")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            bad(f"{where}: appArmorProfile.type is not RuntimeDefault or Localhost")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad(f"{where}: allowPrivilegeEscalation is not false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            bad(f"{where}: capabilities.drop does not contain ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            bad(f"{where}: capabilities.add beyond NET_BIND_SERVICE: {capabilities.get('add')}")
        run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            bad(f"{where}: runAsNonRoot is not true (container or pod)")
        if sc.get("runAsUser") == 0:
            bad(f"{where}: runAsUser is 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad(f"{where}: seccompProfile.type is {seccomp!r}, not RuntimeDefault or Localhost")
        # cxpulse's own promises, beyond the standard.
        if sc.get("readOnlyRootFilesystem") is not True:
            bad(f"{where}: readOnlyRootFilesystem is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) != IMAGE_USER:
            bad(f"{where}: runAsUser is not the image's user {IMAGE_USER}")
        if sc.get("runAsGroup", pod_sc.get("runAsGroup")) != IMAGE_USER:
            bad(f"{where}: runAsGroup is not the image's group {IMAGE_USER}")
    if pod.get("enableServiceLinks") is not False:
        bad("enableServiceLinks is not false")
    if pod.get("automountServiceAccountToken") is not False:
        bad("automountServiceAccountToken is not false")
    return [f"{name}: {p}" for p in problems]


def main():
    problems, pods = [], 0
    for path in sys.argv[1:]:
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        for doc in docs:
            if doc.get("kind") == "ServiceAccount" and doc.get("automountServiceAccountToken") is not False:
                problems.append(f"{path}: ServiceAccount {doc['metadata']['name']}: automountServiceAccountToken is not false")
            for metadata, pod in pod_templates(doc):
                pods += 1
                name = f"{path}: {doc['kind']} {doc['metadata']['name']}"
                problems += check_pod(name, metadata, pod)
    if pods == 0:
        problems.append("no pod template found")
    if problems:
        print("restricted pod security: FAILED", *problems, sep="\n  ", file=sys.stderr)
        sys.exit(1)
    print(f"restricted pod security: ok ({pods} pod templates)")


if __name__ == "__main__":
    main()
