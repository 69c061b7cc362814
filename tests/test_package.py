#!/usr/bin/python3
"""rankd as a user installs it (run by ctest as `package`).

1. `cmake --install` into a DESTDIR (prefix /usr): the tools, librankd
   (.so with SONAME librankd.so.0.1 exporting only rankd_*, and .a), the
   header, rankd.pc, the proto, the man pages, the examples.
2. include/rank.h as installed compiles as C99 and as C++ (c++11, c++17)
   with -Wall -Wextra -Werror (-pedantic).
3. examples/score.c, compiled from the installed tree only with
   `pkg-config --cflags --libs rankd` (PKG_CONFIG_PATH into the DESTDIR; no
   path into the source or build tree), and again statically against
   librankd.a with `pkg-config --static --libs`, scores the MovieLens test
   split like `rank score` (max abs diff <= 1e-6) on a bundle trained here
   by the installed `rank`, and stops at a bad line (a dense cell not a
   number, a row short of a cell) naming it; examples/hello.c (one user,
   three movies on the command line) equals `rank score` on the same rows.
4. `cpack -G DEB`: the .deb's Depends names the Debian package of every
   library the installed ELF files need (dpkg -S), and nothing else; the
   package unpacked into a temporary root (dpkg -x, no container) runs
   `rankd --version`, `rankd --help`, `rank --version`, and the example
   built against that root (its rankd.pc the only .pc pkg-config sees, as
   on a clean Debian without -dev packages) gives the same scores again.
Prints one summary line.

  test_package.py --build-dir BUILD --source-dir SRC [--keep]
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

TOL = 1e-6


def fail(msg):
    print("package: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def sh(cmd, env=None, cwd=None, ok=True):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=600)
    if ok and r.returncode != 0:
        fail("%s exited %d:\n%s%s" % (" ".join(cmd), r.returncode, r.stdout[-3000:], r.stderr[-3000:]))
    return r


def read_scores(path):
    with open(path) as f:
        lines = f.read().split("\n")
    if lines[0].split("\t")[0] != "pctr":
        fail("%s: header %r" % (path, lines[0]))
    return [float(l.split("\t")[0]) for l in lines[1:] if l]


def max_diff(a, b, what):
    if len(a) != len(b):
        fail("%s: %d scores, want %d" % (what, len(a), len(b)))
    d = max(abs(x - y) for x, y in zip(a, b))
    if not d <= TOL:
        fail("%s: max abs diff %.3g vs rank score" % (what, d))
    return d


def libdir_of(root):
    pcs = glob.glob(os.path.join(root, "usr", "lib*", "**", "rankd.pc"), recursive=True)
    if len(pcs) != 1:
        fail("%s: %d rankd.pc files" % (root, len(pcs)))
    return os.path.dirname(os.path.dirname(pcs[0]))


def pkgconfig_env(root, alone=False):
    """pkg-config finds ROOT's rankd.pc; alone: and no other .pc (a clean
    Debian with the package and its Depends has no -dev package's .pc)."""
    env = dict(os.environ)
    env.pop("PKG_CONFIG_PATH", None)
    env["PKG_CONFIG_LIBDIR" if alone else "PKG_CONFIG_PATH"] = os.path.join(libdir_of(root), "pkgconfig")
    env["LD_LIBRARY_PATH"] = libdir_of(root)
    return env


def build_example(root, out, forbidden, static=False, name="score.c", alone=False):
    """Compile ROOT's installed examples/NAME with pkg-config only."""
    env = pkgconfig_env(root, alone)
    src = os.path.join(root, "usr", "share", "doc", "rankd", "examples", name)
    cflags = sh(["pkg-config", "--cflags", "rankd"], env=env).stdout.split()
    libs = sh(["pkg-config", "--libs"] + (["--static"] if static else []) + ["rankd"], env=env).stdout.split()
    for f in cflags + libs:
        for bad in forbidden:
            if f[:2] in ("-I", "-L") and os.path.realpath(f[2:]).startswith(bad):
                fail("pkg-config points into %s: %s" % (bad, f))
    if static:
        libdir = sh(["pkg-config", "--variable=libdir", "rankd"], env=env).stdout.strip()
        libs = [os.path.join(libdir, "librankd.a") if f == "-lrankd" else f for f in libs]
    sh(["cc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", src, "-o", out] + cflags + libs, env=env)
    ldd = sh(["ldd", out], env=env).stdout
    if static == ("librankd" in ldd):
        fail("%s: %s librankd.so: %s" % (out, "links" if static else "does not link", ldd))
    return env


def run_example(exe, env, bundle, tsv, out):
    with open(tsv) as fin, open(out, "w") as fout:
        r = subprocess.run([exe, bundle], stdin=fin, stdout=fout, stderr=subprocess.PIPE, text=True,
                           env=env, timeout=300)
    if r.returncode != 0:
        fail("%s exited %d: %s" % (exe, r.returncode, r.stderr[-2000:]))
    return read_scores(out)


def check_example_errors(exe, env, bundle, tsv, ref, tmp):
    """examples/score.c stops at the first bad line (exit 1, the line
    number and column on stderr) after printing only the rows before it:
    never a value read as 0 or a pCTR out of its row's place."""
    with open(tsv) as f:
        rows = [next(f) for _ in range(6)]
    hdr = rows[0].rstrip("\n").split("\t")
    year = hdr.index("year")
    bad_num = rows[:4] + ["\t".join("abc" if c == year else v for c, v in
                                    enumerate(rows[4].rstrip("\n").split("\t"))) + "\n"] + rows[5:]
    short = rows[:3] + ["\t".join(rows[3].split("\t")[:-1]) + "\n"] + rows[4:]
    for lines, want in ((bad_num, "score: line 5: column 'year': 'abc' is not a number"),
                        (short, "score: line 4: not %d tab-separated cells" % len(hdr))):
        path = os.path.join(tmp, "bad.tsv")
        with open(path, "w") as f:
            f.writelines(lines)
        with open(path) as fin:
            r = subprocess.run([exe, bundle], stdin=fin, capture_output=True, text=True, env=env, timeout=120)
        out = r.stdout.split("\n")
        got = [float(x) for x in out[1:] if x]
        if r.returncode != 1 or r.stderr.strip() != want or out[0] != "pctr" or len(got) >= len(lines) - 2:
            fail("%s on a bad line: exit %d, stderr %r (want %r), stdout %r" % (exe, r.returncode, r.stderr, want, r.stdout))
        max_diff(got, ref[:len(got)], exe + " before the bad line")


def check_header(root, tmp):
    inc = glob.glob(os.path.join(root, "usr", "include", "rankd", "rank.h"))
    if not inc:
        fail("no usr/include/rankd/rank.h")
    src = os.path.join(tmp, "hdr.c")
    with open(src, "w") as f:
        f.write("#include <rank.h>\nint main(void) { rankd_error e; e.code = RANKD_OK;\n"
                "  return (int)e.code + (RANKD_VERSION_NUM > 0 ? 0 : 1); }\n")
    flags = ["-Wall", "-Wextra", "-Werror", "-pedantic", "-I" + os.path.dirname(inc[0]), "-c", "-o", os.devnull]
    sh(["cc", "-std=c99"] + flags + [src])
    for std in ("c++11", "c++17"):
        sh(["c++", "-x", "c++", "-std=" + std] + flags + [src])


def check_library(root):
    lib = libdir_of(root)
    so = os.path.join(lib, "librankd.so")
    if not os.path.exists(os.path.join(lib, "librankd.a")):
        fail("no librankd.a")
    soname = re.search(r"SONAME\s+(\S+)", sh(["objdump", "-p", so]).stdout)
    if not soname or soname.group(1) != "librankd.so.0.1":
        fail("SONAME %r" % (soname and soname.group(1)))
    syms = [l.split()[-1] for l in sh(["nm", "-D", "--defined-only", so]).stdout.splitlines()]
    bad = [s for s in syms if not s.startswith("rankd_") and s != "RANKD_0.1"]
    if bad or len(syms) < 20:
        fail("librankd.so exports %d symbols, unexpected: %s" % (len(syms), bad[:10]))
    return len(syms) - 1


def owner(path):
    """Debian package owning a library file (tries the /usr-merged twin)."""
    real = os.path.realpath(path)
    for p in (path, real, re.sub(r"^/usr/lib/", "/lib/", real), re.sub(r"^/lib/", "/usr/lib/", real)):
        r = sh(["dpkg", "-S", p], ok=False)
        if r.returncode == 0:
            return r.stdout.split(":")[0]
    fail("no Debian package owns %s" % path)


def dep_names(field):
    return {re.sub(r"[ (].*", "", alt.strip()) for d in field.split(",") for alt in d.split("|") if alt.strip()}


def check_depends(deb, root):
    depends = sh(["dpkg-deb", "-f", deb, "Depends"]).stdout.strip()
    deps = dep_names(depends)
    # each dependency and the packages it depends on directly (libopenblas0 ->
    # libopenblas0-pthread | ..., which holds the library behind the alternative)
    closure = {}
    for d in deps:
        r = sh(["dpkg-query", "-W", "-f", "${Depends}", d], ok=False)
        closure[d] = {d} | (dep_names(r.stdout) if r.returncode == 0 else set())
    used = set()
    elves = [p for p in glob.glob(os.path.join(root, "usr", "bin", "*"))] + \
        glob.glob(os.path.join(libdir_of(root), "librankd.so.*.*.*"))
    for elf in elves:
        needed = re.findall(r"NEEDED\s+(\S+)", sh(["objdump", "-p", elf]).stdout)
        ldd = sh(["ldd", elf], env=pkgconfig_env(root)).stdout
        for n in needed:
            # the dynamic loader (libc6) is NEEDED where thread-local
            # storage is used (__tls_get_addr); ldd lists it without "=>"
            if n.startswith("librankd") or n.startswith("ld-linux"):
                continue
            m = re.search(r"^\s*%s => (\S+)" % re.escape(n), ldd, re.M)
            if not m:
                fail("%s: %s not found by ldd" % (elf, n))
            pkg = owner(m.group(1))
            hit = [d for d in deps if pkg in closure[d]]
            if not hit:
                fail("%s needs %s (package %s), not in Depends: %s" % (elf, n, pkg, depends))
            used.update(hit)
    if deps - used:
        fail("Depends lists packages nothing needs: %s" % sorted(deps - used))
    for want in ("libgrpc29", "libprotobuf-c1", "librocksdb7.8", "libopenblas0", "libjansson4", "libxxhash0"):
        if want not in deps:
            fail("Depends lacks %s: %s" % (want, depends))
    return depends


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--source-dir", required=True)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    build, src = os.path.realpath(a.build_dir), os.path.realpath(a.source_dir)
    tmp = tempfile.mkdtemp(prefix="rk_pkg_")
    version = None
    with open(os.path.join(src, "include", "rank.h")) as f:
        version = re.search(r'#define RANKD_VERSION "([0-9.]+)"', f.read()).group(1)

    # 1. DESTDIR install
    dest = os.path.join(tmp, "dest")
    env = dict(os.environ, DESTDIR=dest)
    sh(["cmake", "--install", build, "--prefix", "/usr"], env=env)
    for p in ("usr/bin/rank", "usr/bin/rankd", "usr/bin/rank-bench", "usr/include/rankd/rank.h",
              "usr/share/rankd/proto/rank.proto", "usr/share/man/man1/rankd.1", "usr/share/man/man1/rank.1",
              "usr/share/man/man1/rank-bench.1", "usr/share/doc/rankd/examples/score.c",
              "usr/share/doc/rankd/examples/client.py", "usr/share/doc/rankd/examples/hello.c"):
        if not os.path.exists(os.path.join(dest, p)):
            fail("not installed: /" + p)
    with open(os.path.join(dest, "usr/share/man/man1/rankd.1")) as f:
        man = f.read()
    if "\\-\\-listen" not in man:
        fail("rankd.1 does not document --listen")
    # each option of rankd --help is its own tagged paragraph of rankd.1
    # (help2man finds them only in a paragraph of their own)
    for opt in ("threads", "blas-threads", "max-candidates", "queue-depth", "ram-tables-mb", "encoder", "updates"):
        if not re.search(r"^\.TP\n\\fB\\-\\-%s\\fR" % opt.replace("-", r"\\-"), man, re.M):
            fail("rankd.1: --%s is not an option paragraph" % opt)
    n_syms = check_library(dest)

    # 2. the header as C99 and C++
    check_header(dest, tmp)

    # 3. the example against the installed tree vs rank score
    rank = os.path.join(dest, "usr", "bin", "rank")
    log = os.path.join(tmp, "prep.log")
    with open(log, "w") as lf:
        for cmd in ([rank, "data", "movielens", "--input", os.path.join(src, "data", "movielens"),
                     "--out", os.path.join(tmp, "ml")],
                    [rank, "train", "--config", os.path.join(src, "configs", "movielens_dcnv2.json"),
                     "--data", os.path.join(tmp, "ml"), "--out", os.path.join(tmp, "bundle"), "--epochs", "1"],
                    [rank, "score", "--model", os.path.join(tmp, "bundle"), "--input",
                     os.path.join(tmp, "ml", "test.tsv"), "--output", os.path.join(tmp, "ref.tsv")]):
            if subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, timeout=600).returncode:
                fail("%s failed (see %s)" % (" ".join(cmd[:2]), log))
    ref = read_scores(os.path.join(tmp, "ref.tsv"))
    test_tsv, bundle = os.path.join(tmp, "ml", "test.tsv"), os.path.join(tmp, "bundle")
    forbidden = [src, build]
    diffs = {}
    for static in (False, True):
        exe = os.path.join(tmp, "score_static" if static else "score")
        eenv = build_example(dest, exe, forbidden, static)
        got = run_example(exe, eenv, bundle, test_tsv, exe + ".tsv")
        diffs["static" if static else "shared"] = max_diff(got, ref, exe)
    check_example_errors(exe, eenv, bundle, test_tsv, ref, tmp)

    # examples/hello.c: user 1 and three movies vs rank score on the same
    # rows (every other feature unset / empty)
    exe = os.path.join(tmp, "hello")
    eenv = build_example(dest, exe, forbidden, name="hello.c")
    movies = ["1", "2", "296"]
    r = subprocess.run([exe, bundle, "1"] + movies, capture_output=True, text=True, env=eenv, timeout=120)
    if r.returncode != 0 or "feature movie_id" not in r.stderr:
        fail("hello exited %d: %s" % (r.returncode, r.stderr[-2000:]))
    got = [float(l.split("\t")[1]) for l in r.stdout.split("\n") if l]
    with open(test_tsv) as f:
        hdr = f.readline().rstrip("\n").split("\t")
    with open(os.path.join(tmp, "hello.tsv"), "w") as f:
        f.write("\t".join(hdr) + "\n")
        for mv in movies:
            f.write("\t".join({"label": "0", "user_id": "1", "movie_id": mv}.get(c, "") for c in hdr) + "\n")
    sh([rank, "score", "--model", bundle, "--input", os.path.join(tmp, "hello.tsv"), "--output",
        os.path.join(tmp, "hello_ref.tsv")])
    diffs["hello"] = max_diff(got, read_scores(os.path.join(tmp, "hello_ref.tsv")), exe)

    # 4. the Debian package
    pkgdir = os.path.join(tmp, "pkg")
    sh(["cpack", "-G", "DEB", "--config", os.path.join(build, "CPackConfig.cmake"), "-B", pkgdir], cwd=tmp)
    debs = glob.glob(os.path.join(pkgdir, "*.deb"))
    if len(debs) != 1:
        fail("cpack made %d .deb files" % len(debs))
    depends = check_depends(debs[0], dest)
    root = os.path.join(tmp, "root")
    sh(["dpkg", "-x", debs[0], root])
    for tool in ("rankd", "rank", "rank-bench"):
        out = sh([os.path.join(root, "usr", "bin", tool), "--version"]).stdout.strip()
        if out != "%s %s" % (tool, version):
            fail("%s --version printed %r" % (tool, out))
    if "--listen" not in sh([os.path.join(root, "usr", "bin", "rankd"), "--help"]).stdout:
        fail("rankd --help from the package does not mention --listen")
    exe = os.path.join(tmp, "score_deb")
    eenv = build_example(root, exe, forbidden + [dest], alone=True)
    diffs["deb"] = max_diff(run_example(exe, eenv, bundle, test_tsv, exe + ".tsv"), ref, exe)

    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print("package: rows=%d max_abs_diff_shared=%.3g max_abs_diff_static=%.3g max_abs_diff_deb=%.3g "
          "max_abs_diff_hello=%.3g exported=%d deb=%s depends=%s"
          % (len(ref), diffs["shared"], diffs["static"], diffs["deb"], diffs["hello"], n_syms,
                                              os.path.basename(debs[0]), depends.replace(" ", "")))


if __name__ == "__main__":
    main()
