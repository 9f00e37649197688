#!/usr/bin/env python3
"""Checks that the runtime stage of the Dockerfile installs every shared
library the cxpulse binary loads.

Usage: image_libs.py DOCKERFILE BINARY

`ldd BINARY` lists the libraries; `dpkg -S` names the Debian package that
ships each; every such package must be named by an `apt-get install` in the
Dockerfile's `runtime` stage. The binary must have been built on the Debian
release the Dockerfile builds on (the names and sonames are that release's).
"""

import re
import shlex
import subprocess
import sys


def stages(dockerfile_text):
    """Maps stage name -> list of logical instruction lines (continuations joined)."""
    joined = re.sub(r"\\\n", " ", dockerfile_text)
    result, current = {}, None
    args = {}
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word = line.split()[0].upper()
        if word == "ARG" and current is None:
            name, _, value = line.split(None, 1)[1].partition("=")
            args[name] = value
        if word == "FROM":
            parts = line.split()
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), parts[1])
            current = parts[3] if len(parts) >= 4 and parts[2].upper() == "AS" else image
            result[current] = [f"FROM {image}"]
        elif current is not None:
            result[current].append(line)
    return result


def installed_packages(lines):
    packages = set()
    for line in lines:
        if not line.upper().startswith("RUN"):
            continue
        for command in re.split(r"&&|;|\|\|", line[3:]):
            words = shlex.split(command)
            if len(words) >= 2 and words[0] in ("apt-get", "apt") and "install" in words:
                after = words[words.index("install") + 1:]
                packages.update(w for w in after if not w.startswith("-"))
    return packages


def package_of(path):
    out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
    if out.returncode != 0:
        # usrmerge: dpkg may know the file under /lib rather than /usr/lib or the reverse.
        alt = path[4:] if path.startswith("/usr/") else "/usr" + path
        out = subprocess.run(["dpkg", "-S", alt], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return out.stdout.split(":", 1)[0].strip()


def main():
    dockerfile, binary = sys.argv[1], sys.argv[2]
    all_stages = stages(open(dockerfile).read())
    if "runtime" not in all_stages or "build" not in all_stages:
        sys.exit(f"{dockerfile}: expected stages named `build` and `runtime`, found {list(all_stages)}")
    build_image = all_stages["build"][0].split()[1]
    runtime_image = all_stages["runtime"][0].split()[1]
    release = runtime_image.split(":")[1].split("-")[0]
    if not build_image.endswith(f"-{release}"):
        sys.exit(f"{dockerfile}: builder `{build_image}` and runtime `{runtime_image}` are not the same Debian release")
    host = dict(
        line.rstrip("\n").split("=", 1) for line in open("/etc/os-release") if "=" in line
    ).get("VERSION_CODENAME", "").strip('"')
    if host != release:
        sys.exit(f"the binary was built on Debian `{host}`, the image on `{release}`: "
                 f"library names differ between releases; run this check on a {release} machine")
    wanted = installed_packages(all_stages["runtime"])
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    failures, seen = [], []
    for line in ldd.splitlines():
        line = line.strip()
        if not line or line.startswith("linux-vdso") or line.startswith("statically linked"):
            continue
        if "not found" in line:
            failures.append(f"{line}: not found on this machine")
            continue
        name = line.split()[0]
        path = line.split("=>")[1].split("(")[0].strip() if "=>" in line else name
        package = package_of(path)
        if package is None:
            failures.append(f"{name} ({path}): no Debian package ships it")
        elif package not in wanted:
            failures.append(f"{name} ({path}) comes from `{package}`, which the runtime stage does not install")
        else:
            seen.append(f"{name}:{package}")
    if failures:
        print("image libraries: FAILED", *failures, sep="\n  ", file=sys.stderr)
        print(f"  (runtime stage installs: {' '.join(sorted(wanted))})", file=sys.stderr)
        sys.exit(1)
    print(f"image libraries: ok ({', '.join(seen)})")


if __name__ == "__main__":
    main()
