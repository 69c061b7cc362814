"""Build hook of rankd_client: generate the grpcio stubs from the .proto files.

rank.proto is read from $RANKD_PROTO_DIR, the repository's proto/ (a build
from the repo), or /usr/share/rankd/proto (the rankd Debian package);
health.proto from Debian's grpc-proto (/usr/share/grpc-proto). The protos are
compiled as rankd_client/*.proto, so the generated modules import each other
as rankd_client.*. The version is include/rank.h's RANKD_VERSION.
"""
import os
import re
import shutil
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
HEALTH = "/usr/share/grpc-proto/grpc/health/v1/health.proto"


def find(name, dirs):
    for d in dirs:
        if d and os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)
    raise SystemExit("rankd_client: %s not found in %s (set RANKD_PROTO_DIR)" % (name, [d for d in dirs if d]))


def version():
    hdr = os.path.join(HERE, "..", "include", "rank.h")
    if os.path.isfile(hdr):
        with open(hdr) as f:
            return re.search(r'#define RANKD_VERSION "([0-9.]+)"', f.read()).group(1)
    with open(os.path.join(HERE, "rankd_client", "_version.txt")) as f:
        return f.read().strip()


class build_stubs(build_py):
    def run(self):
        super().run()
        from grpc_tools import protoc
        import grpc_tools

        rank = find("rank.proto", [os.environ.get("RANKD_PROTO_DIR"), os.path.join(HERE, "..", "proto"),
                                   "/usr/share/rankd/proto"])
        health = find("health.proto", [os.path.dirname(HEALTH)])
        tmp = tempfile.mkdtemp(prefix="rankd_client_")
        try:
            pkg = os.path.join(tmp, "rankd_client")
            os.makedirs(pkg)
            shutil.copy(rank, os.path.join(pkg, "rank.proto"))
            shutil.copy(health, os.path.join(pkg, "health.proto"))
            inc = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
            for p in ("rank.proto", "health.proto"):
                rc = protoc.main(["grpc_tools.protoc", "-I", tmp, "-I", inc, "--python_out", self.build_lib,
                                  "--grpc_python_out", self.build_lib, os.path.join(pkg, p)])
                if rc != 0:
                    raise SystemExit("rankd_client: grpc_tools.protoc failed on %s" % p)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        with open(os.path.join(self.build_lib, "rankd_client", "_version.txt"), "w") as f:
            f.write(version() + "\n")


setup(version=version(), cmdclass={"build_py": build_stubs})
