#!/usr/bin/python3
"""bench/ops_threads.py PID SECONDS [TAG] — what each thread of a running rankd
costs its cores over SECONDS (issue 17, updates p99): CPU ms/s and run-queue
wait ms/s (/proc/PID/task/*/schedstat), voluntary / involuntary context
switches per second (status), nice. Roles of rankd's own threads (all named
"rankd"): admin = the one at nice 19, worker = the one created just before it
(one worker: --threads 1), acceptor = the one just after. Last line:
SUM TAG nice0_ms=X nice19_ms=X ROLE=CPU_ms_per_s ... worker_invol=X worker_wait=X
CPU figures survive a shared machine (latency does not): divide by the
calls per second of the same window for a cost per call.
"""
import os, sys, time
pid, secs = int(sys.argv[1]), float(sys.argv[2])
tag = sys.argv[3] if len(sys.argv) > 3 else ""
def snap():
    d = {}
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            st = open("/proc/%d/task/%s/stat" % (pid, t)).read()
            comm = st[st.index("(") + 1:st.rindex(")")]
            f = st[st.rindex(")") + 2:].split()
            nice = int(f[16])
            sc = open("/proc/%d/task/%s/schedstat" % (pid, t)).read().split()
            vol = nvol = 0
            for l in open("/proc/%d/task/%s/status" % (pid, t)):
                if l.startswith("voluntary_ctxt"): vol = int(l.split()[1])
                if l.startswith("nonvoluntary_ctxt"): nvol = int(l.split()[1])
            d[int(t)] = (comm, nice, int(sc[0]), int(sc[1]), vol, nvol)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    return d
a = snap(); t0 = time.time(); time.sleep(secs); b = snap(); dt = time.time() - t0
rk = sorted(t for t, v in b.items() if v[0] == "rankd" and t != pid)
adm = [t for t in rk if b[t][1] == 19]
role = {}
if adm:
    i = rk.index(adm[0]); role[adm[0]] = "admin"
    if i > 0: role[rk[i - 1]] = "worker"
    if i + 1 < len(rk): role[rk[i + 1]] = "acceptor"
tot = {"nice0": 0.0, "nice19": 0.0}
res = {}
for t, v in sorted(b.items()):
    u = a.get(t, (v[0], v[1], 0, 0, 0, 0))
    cpu = (v[2] - u[2]) / 1e6 / dt
    wait = (v[3] - u[3]) / 1e6 / dt
    vol, inv = (v[4] - u[4]) / dt, (v[5] - u[5]) / dt
    name = role.get(t, v[0])
    tot["nice19" if v[1] > 0 else "nice0"] += cpu
    res[name] = res.get(name, 0) + cpu
    if cpu >= 0.3 or inv >= 1:
        print("  %-9s tid %-7d %-16s nice=%3d cpu_ms/s=%7.1f runq_wait_ms/s=%6.1f vol/s=%7.1f invol/s=%7.1f" % (tag, t, name, v[1], cpu, wait, vol, inv))
    if name == "worker": res["worker_invol"] = inv; res["worker_wait"] = wait
print("SUM %s nice0_ms=%.1f nice19_ms=%.1f %s" % (tag, tot["nice0"], tot["nice19"], " ".join("%s=%.1f" % kv for kv in sorted(res.items()) if kv[1] >= 0.3)))
