#!/usr/bin/env python3
"""One file out of a package of the npm registry, checked against its digest: what `make`
needs of npm (the report's chart library) without installing Node.js and npm.

    python3 scripts/fetch_npm_file.py NAME VERSION PATH_IN_PACKAGE SHA256 TARGET

The registry's tarball is read in memory, the file checked, then written atomically.
Standard library only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
import time
import urllib.request

REGISTRY = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org").rstrip("/")


def tarball(name: str, version: str) -> bytes:
    """The package's tarball, tried three times (a registry hiccup is not a failure)."""
    url = f"{REGISTRY}/{name}/-/{name.rpartition('/')[2]}-{version}.tgz"
    for attempt in range(3):
        try:
            with urllib.request.urlopen(url, timeout=60) as reply:
                return bytes(reply.read())
        except OSError as exc:
            if attempt == 2:
                raise SystemExit(f"cannot fetch {url}: {exc}") from None
            time.sleep(2 * (attempt + 1))
    raise AssertionError("unreachable")


def main(name: str, version: str, inner: str, sha256: str, target: str) -> int:
    with tarfile.open(fileobj=io.BytesIO(tarball(name, version)), mode="r:gz") as archive:
        member = archive.extractfile(f"package/{inner}")
        if member is None:
            raise SystemExit(f"{name}@{version} has no file {inner}")
        data = member.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{name}@{version}/{inner}: sha256 {digest}, expected {sha256}")
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    with open(f"{target}.tmp", "wb") as out:
        out.write(data)
    os.replace(f"{target}.tmp", target)
    print(f"installed {name}@{version}/{inner} as {target}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 6:
        raise SystemExit(__doc__)
    raise SystemExit(main(*sys.argv[1:]))
