#!/usr/bin/python3
"""gRPC server reflection of rankd, from gRPC's own reflection client (run by ctest).

grpcio-reflection is not in Debian 12: scripts/setup-test-venv.sh installs
it (the version of Debian's python3-grpcio) into $RK_MODEL_HOME/venv-test,
whose site-packages this test puts on sys.path (`make test` runs the
script first; without it the test fails saying so).

Trains a 1-epoch MovieLens bundle, starts rankd on 127.0.0.1:0 and checks:
  - list_services (v1alpha, and v1 over the same wire messages): exactly
    rankd.v1.Ranker, rankd.v1.Admin, grpc.health.v1.Health and both
    ServerReflection services;
  - ProtoReflectionDescriptorDatabase + a DescriptorPool fetch the Ranker's
    descriptors by symbol; rank.proto's FileDescriptorProto equals the one
    Debian's protoc (grpc_tools) compiles from proto/rank.proto;
  - a RankRequest built from those descriptors alone (message classes made
    at run time, no generated code) and sent to Rank gets the same pCTRs,
    bit for bit, as the request built with the compiled stubs;
  - file_by_filename with imports, symbols of every kind (method, field,
    nested enum value), several requests on one stream; unknown symbols,
    files and extensions get error_response NOT_FOUND naming them; bytes
    that are no request end the stream INVALID_ARGUMENT;
  - rankd --no-reflection answers UNIMPLEMENTED.
Prints one summary line.

  e2e_reflection.py --bin-dir BUILD/bin --source-dir SRC [--keep]
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_grpcio import e2e_args, train_bundle  # noqa: E402
from e2e_ops import Rankd  # noqa: E402

SERVICES = {"rankd.v1.Ranker", "rankd.v1.Admin", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


RUNNING = []  # rankd processes to kill if the test fails


def fail(msg):
    for p in RUNNING:
        if p.poll() is None:
            p.kill()
    print("e2e_reflection: FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def use_test_venv():
    home = os.environ.get("RK_MODEL_HOME", os.path.expanduser("~/.cache/rankd"))
    sp = glob.glob(os.path.join(home, "venv-test", "lib", "python3*", "site-packages"))
    if not sp:
        fail("no %s/venv-test: run scripts/setup-test-venv.sh (make test does)" % home)
    sys.path.insert(0, sp[0])


def compiled_stubs(src, tmp):
    """rank_pb2 from proto/rank.proto by Debian's grpc_tools protoc."""
    d = os.path.join(tmp, "stubs")
    os.makedirs(d)
    shutil.copy(os.path.join(src, "proto", "rank.proto"), d)
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", d, "--python_out", d, "rank.proto"], check=True)
    sys.path.insert(0, d)
    import rank_pb2
    return rank_pb2


def ask(stub, reqs):
    """Several requests on one reflection stream; their answers."""
    out = list(stub.ServerReflectionInfo(iter(reqs), timeout=30))
    if len(out) != len(reqs):
        fail("%d answers to %d requests on one stream" % (len(out), len(reqs)))
    return out


def fill(msg, user_id, ads):
    """A RankRequest through its descriptor's field names only."""
    msg.request_id = "reflect-1"
    msg.user.user_id = user_id
    for ad in ads:
        msg.candidates.add().ad_id = ad


def check_services(grpc, chan, refl_pb2, stub):
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
    got = set(ProtoReflectionDescriptorDatabase(chan).get_services())
    if got != SERVICES:
        fail("list_services (v1alpha): %s, want %s" % (sorted(got), sorted(SERVICES)))
    v1 = chan.stream_stream(V1_METHOD, request_serializer=refl_pb2.ServerReflectionRequest.SerializeToString,
                            response_deserializer=refl_pb2.ServerReflectionResponse.FromString)
    r = list(v1(iter([refl_pb2.ServerReflectionRequest(host="h", list_services="")]), timeout=30))
    got1 = {s.name for s in r[0].list_services_response.service}
    if got1 != SERVICES or r[0].valid_host != "h" or r[0].original_request.list_services != "":
        fail("list_services (v1): %s host %r" % (sorted(got1), r[0].valid_host))


def no_json_names(fdp):
    """fdp without json_name (protoc's descriptor sets carry it, Python's
    generated descriptors do not): every other field is compared."""
    def clear(msgs):
        for m in msgs:
            for f in m.field:
                f.ClearField("json_name")
            clear(m.nested_type)
    x = type(fdp)()
    x.CopyFrom(fdp)
    clear(x.message_type)
    return x


def check_dynamic_rank(grpc, chan, rank_pb2):
    """Descriptors by reflection, a request from them, Rank; vs the compiled stubs."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
    db = ProtoReflectionDescriptorDatabase(chan)
    pool = descriptor_pool.DescriptorPool(db)
    svc = pool.FindServiceByName("rankd.v1.Ranker")
    m = svc.FindMethodByName("Rank")
    fetched = descriptor_pb2.FileDescriptorProto()
    svc.file.CopyToProto(fetched)
    local = descriptor_pb2.FileDescriptorProto()
    rank_pb2.DESCRIPTOR.CopyToProto(local)
    if no_json_names(fetched) != no_json_names(local):
        fail("rank.proto by reflection differs from protoc's compile of proto/rank.proto")
    factory = message_factory.MessageFactory(pool)
    Req, Resp = factory.GetPrototype(m.input_type), factory.GetPrototype(m.output_type)
    if Req is rank_pb2.RankRequest:
        fail("the dynamic request class is the compiled one")
    ads = [str(a) for a in (1, 2, 3, 50, 260, 1196)]
    dyn, ref = Req(), rank_pb2.RankRequest()
    fill(dyn, "7", ads)
    fill(ref, "7", ads)
    path = "/%s/%s" % (svc.full_name, m.name)
    call_dyn = chan.unary_unary(path, request_serializer=Req.SerializeToString, response_deserializer=Resp.FromString)
    call_ref = chan.unary_unary(path, request_serializer=rank_pb2.RankRequest.SerializeToString,
                                response_deserializer=rank_pb2.RankResponse.FromString)
    a, b = call_dyn(dyn, timeout=30), call_ref(ref, timeout=30)
    pa = [(s.ad_id, s.pctr) for s in a.scores]
    pb = [(s.ad_id, s.pctr) for s in b.scores]
    if [x[0] for x in pa] != ads or pa != pb or not all(0.0 < x[1] < 1.0 for x in pa):
        fail("dynamic Rank scores %s vs compiled %s (%d candidates)" % (pa, pb, len(ads)))
    return len(pool.FindFileByName("rank.proto").message_types_by_name)


def check_lookups(refl_pb2, stub):
    R = refl_pb2.ServerReflectionRequest
    ok = [R(file_containing_symbol="rankd.v1.Ranker.Rank"),
          R(file_containing_symbol="rankd.v1.RankRequest.request_id"),
          R(file_containing_symbol="grpc.health.v1.HealthCheckResponse.SERVING"),
          R(file_by_filename="grpc/health/v1/health.proto"),
          R(all_extension_numbers_of_type="rankd.v1.RankRequest")]
    want_file = ["rank.proto", "rank.proto", "grpc/health/v1/health.proto", "grpc/health/v1/health.proto"]
    out = ask(stub, ok)
    from google.protobuf import descriptor_pb2
    for i, w in enumerate(want_file):
        names = []
        for b in out[i].file_descriptor_response.file_descriptor_proto:
            f = descriptor_pb2.FileDescriptorProto()
            f.ParseFromString(b)
            names.append(f.name)
        if not names or names[0] != w:
            fail("%s: files %s, want %s first" % (ok[i], names, w))
    e = out[4].all_extension_numbers_response
    if e.base_type_name != "rankd.v1.RankRequest" or list(e.extension_number):
        fail("all_extension_numbers_of_type: %s" % out[4])
    bad = [(R(file_containing_symbol="rankd.v1.NoSuchThing"), "rankd.v1.NoSuchThing"),
           (R(file_by_filename="nosuch.proto"), "nosuch.proto"),
           (R(file_containing_extension=refl_pb2.ExtensionRequest(containing_type="rankd.v1.RankRequest",
                                                                 extension_number=99)), "rankd.v1.RankRequest"),
           (R(all_extension_numbers_of_type="rankd.v1.Ranker"), "rankd.v1.Ranker")]
    out = ask(stub, [b[0] for b in bad])
    for (req, name), r in zip(bad, out):
        er = r.error_response
        if r.WhichOneof("message_response") != "error_response" or er.error_code != 5 or name not in er.error_message:
            fail("%s: answer %s, want error_response NOT_FOUND naming %s" % (req, r, name))
    return len(ok) + len(bad)


def check_garbage(grpc, chan):
    """Bytes that are no ServerReflectionRequest end the stream INVALID_ARGUMENT."""
    raw = chan.stream_stream(V1_METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        list(raw(iter([b"\x3a\xff\xff\xff\x0f"]), timeout=30))  # field 7, length beyond the message
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT or "ServerReflectionRequest" not in e.details():
            fail("garbage request: %s %s, want INVALID_ARGUMENT naming the message" % (e.code(), e.details()))
        return
    fail("garbage request: answered")


def main():
    a = e2e_args()
    use_test_venv()
    import grpc  # Debian's python3-grpcio
    from grpc_reflection.v1alpha import reflection_pb2 as refl_pb2
    from grpc_reflection.v1alpha import reflection_pb2_grpc as refl_grpc

    tmp = tempfile.mkdtemp(prefix="rk_e2e_reflection_")
    train_bundle(os.path.join(a.bin_dir, "rank"), a.source_dir, tmp, os.path.join(tmp, "prep.log"))
    rank_pb2 = compiled_stubs(a.source_dir, tmp)
    d = Rankd(a.bin_dir, ["--model", os.path.join(tmp, "bundle"), "--threads", "1"], os.path.join(tmp, "rankd.log"))
    RUNNING.append(d.p)
    with grpc.insecure_channel("127.0.0.1:%d" % d.port) as chan:
        stub = refl_grpc.ServerReflectionStub(chan)
        check_services(grpc, chan, refl_pb2, stub)
        n_msgs = check_dynamic_rank(grpc, chan, rank_pb2)
        n_lookups = check_lookups(refl_pb2, stub)
        check_garbage(grpc, chan)
    d.stop()
    off = Rankd(a.bin_dir, ["--model", os.path.join(tmp, "bundle"), "--threads", "1", "--no-reflection"],
                os.path.join(tmp, "rankd-off.log"))
    RUNNING.append(off.p)
    with grpc.insecure_channel("127.0.0.1:%d" % off.port) as chan:
        try:
            ask(refl_grpc.ServerReflectionStub(chan), [refl_pb2.ServerReflectionRequest(list_services="")])
            fail("--no-reflection: reflection answered")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                fail("--no-reflection: %s, want UNIMPLEMENTED" % e.code())
    off.stop()
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print("e2e_reflection: services=%d rank_proto_messages=%d lookups=%d dynamic_rank=ok no_reflection=UNIMPLEMENTED"
          % (len(SERVICES), n_msgs, n_lookups))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # an RpcError or assertion outside the checks: rankd must not outlive the test
        fail("%s: %s" % (type(e).__name__, e))
