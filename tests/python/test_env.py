"""spotter.env: torchrun and SPOTTER_* conventions.

Precedence (explicit > torch.distributed > environment > default) of rank,
world size, local rank, run name, server and token; the Monitor's error when
WORLD_SIZE > 1 but no process group is initialised; a Monitor configured by
environment variables only, against the real spotterd (plain and with bearer
tokens); and a two-process gloo job launched the way torchrun launches it
(MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK/TORCHELASTIC_RUN_ID), in
which each rank takes its rank from the initialised process group.

This file is also the worker of the last test: ``test_env.py worker OUT RELEASE STEPS``.
"""
import json
import os
import socket
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID",
            "SPOTTER_RUN", "SPOTTER_SERVER", "SPOTTER_TOKEN", "MASTER_ADDR", "MASTER_PORT")
ADMIN_TOKEN = "adm1n-t0ken-0123456789abcdef"


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def train_steps(mon, model, opt, steps, rank=0):
    gen = torch.Generator().manual_seed(100 + rank)
    for _ in range(steps):
        x = torch.randn(8, 16, generator=gen)
        y = torch.randint(0, 4, (8,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        mon.step(loss)


# ----------------------------------------------------------------- the worker
def worker(out, release, steps):
    """One torchrun-style rank: everything comes from the environment."""
    import torch.distributed as dist
    from spotter.torch import Monitor

    result = {}
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    try:  # built before init_process_group: refused
        Monitor(model, opt, total_steps=steps, wait_for_server=0).close()
    except RuntimeError as e:
        result["pre_init_error"] = str(e)
    dist.init_process_group("gloo")  # env://: MASTER_ADDR/PORT, RANK, WORLD_SIZE
    r = dist.get_rank()
    try:  # an explicit rank that contradicts the process group
        Monitor(model, opt, total_steps=steps, server=None, rank=1 - r).close()
    except ValueError as e:
        result["conflict_error"] = str(e)
    model = nn.parallel.DistributedDataParallel(small_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, total_steps=steps, sketch_every=2, sketch_dim=16,
                  wait_for_server=10)
    result.update(rank=mon.rank, world_size=mon.world_size, local_rank=mon.local_rank,
                  distributed=mon.distributed, run=mon.run, server=mon.server,
                  env_rank=int(os.environ["RANK"]))
    train_steps(mon, model, opt, steps, r)
    deadline = time.monotonic() + 30
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.02)  # hold the stream open until the test has looked
    result["released"] = os.path.exists(release)
    result["steps"] = mon.step_count
    mon.close()
    dist.barrier()
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    sys.exit(0)

# ------------------------------------------------------------------ the tests
import pytest  # noqa: E402

from conftest import spotterd_path  # noqa: E402
from spotter import Client, RunSession, SpotterError  # noqa: E402
from spotter import env  # noqa: E402
from spotter.testing import Spotterd  # noqa: E402
from spotter.torch import Monitor  # noqa: E402


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in ENV_VARS:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def hook_count(model):
    n = len(model._forward_pre_hooks)
    for m in model.modules():
        n += len(m._forward_hooks)
    return n + sum(len(p._backward_hooks or {}) for p in model.parameters())


def test_server_and_token_precedence(clean_env):
    assert env.server() == "127.0.0.1:50051" == env.DEFAULT_SERVER
    assert env.token() is None
    clean_env.setenv("SPOTTER_SERVER", "spotter.internal:7000")
    clean_env.setenv("SPOTTER_TOKEN", "from-env")
    assert env.server() == "spotter.internal:7000"
    assert env.server("other:1") == "other:1"          # explicit wins
    assert env.token() == "from-env"
    assert env.token("explicit") == "explicit"
    assert env.token("") is None                       # "": no token, even with SPOTTER_TOKEN
    clean_env.setenv("SPOTTER_SERVER", "")             # empty = unset
    assert env.server() == "127.0.0.1:50051"


def test_run_name_precedence(clean_env):
    with pytest.raises(ValueError, match="SPOTTER_RUN"):
        env.run_name()
    clean_env.setenv("TORCHELASTIC_RUN_ID", "none")    # torchrun's default --rdzv-id
    with pytest.raises(ValueError, match="run="):
        env.run_name()
    clean_env.setenv("TORCHELASTIC_RUN_ID", "job-42")
    assert env.run_name() == "job-42"
    clean_env.setenv("SPOTTER_RUN", "vit")
    assert env.run_name() == "vit"
    assert env.run_name("explicit") == "explicit"


def test_placement_precedence(clean_env, tmp_path):
    p = env.placement()
    assert (p.rank, p.world_size, p.local_rank, p.source, p.distributed) == (0, 1, 0, "default", False)
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "1")
    clean_env.setenv("LOCAL_RANK", "0")
    assert env.placement().source == "environment"
    p = env.placement(rank=2, world_size=4, local_rank=3)   # explicit beats the environment
    assert (p.rank, p.world_size, p.local_rank, p.source) == (2, 4, 3, "explicit")
    assert env.rank(0) == 0 and env.world_size(3) == 3 and env.local_rank(5) == 5
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        env.rank(2)                                      # WORLD_SIZE=1

    clean_env.setenv("RANK", "1")
    clean_env.setenv("WORLD_SIZE", "2")
    clean_env.setenv("LOCAL_RANK", "1")
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2.*init_process_group"):
        env.placement()
    p = env.placement(rank=1, world_size=2)
    assert (p.rank, p.world_size, p.local_rank, p.source) == (1, 2, 1, "explicit")
    clean_env.delenv("LOCAL_RANK")
    assert env.placement(rank=1, world_size=2).local_rank is None    # unknown
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        env.placement(rank=2, world_size=2)
    clean_env.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK='one'"):
        env.placement(world_size=2)

    # An initialised process group beats the environment; explicit values must agree.
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        clean_env.setenv("RANK", "3")
        clean_env.setenv("WORLD_SIZE", "8")
        p = env.placement()
        assert (p.rank, p.world_size, p.source, p.distributed) == (0, 1, "torch.distributed", True)
        assert env.placement(rank=0, world_size=1).rank == 0
        with pytest.raises(ValueError, match="rank=3 was passed"):
            env.placement(rank=3)
        with pytest.raises(ValueError, match="world_size 1"):
            env.placement(world_size=2)
    finally:
        dist.destroy_process_group()


def test_monitor_before_init_process_group_is_an_error(clean_env):
    clean_env.setenv("RANK", "1")
    clean_env.setenv("WORLD_SIZE", "2")
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError) as ei:
        Monitor(model, opt, total_steps=10, server=None)
    msg = str(ei.value)
    assert "WORLD_SIZE" in msg and "torch.distributed.init_process_group" in msg
    assert "rank= and world_size=" in msg
    assert hook_count(model) == 0          # refused before any hook was installed
    # Explicit rank/world_size: the caller takes responsibility.
    mon = Monitor(model, opt, total_steps=10, server=None, rank=1, world_size=2)
    assert (mon.rank, mon.world_size, mon.uploads) == (1, 2, False)
    assert mon.config.world_size == 2
    mon.close()
    # Without a server, no run name is needed; with one, it is.
    with pytest.raises(ValueError, match="SPOTTER_RUN"):
        Monitor(model, opt, total_steps=10, server="127.0.0.1:1", rank=0, world_size=1)


def test_monitor_from_environment_only(clean_env, spotterd):
    clean_env.setenv("SPOTTER_SERVER", spotterd.target)
    clean_env.setenv("SPOTTER_RUN", "from-env")
    clean_env.setenv("TORCHELASTIC_RUN_ID", "not-this-one")
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "1")
    clean_env.setenv("LOCAL_RANK", "0")
    model = small_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    mon = Monitor(model, opt, total_steps=50, sketch_every=2, sketch_dim=16)
    try:
        assert (mon.run, mon.server, mon.rank, mon.world_size, mon.local_rank) == \
            ("from-env", spotterd.target, 0, 1, 0)
        assert mon.directive is not None   # the run was opened and its first directive came
        train_steps(mon, model, opt, 6)
        with Client() as c:                # Client's target from SPOTTER_SERVER too
            assert c.target == spotterd.target
            deadline = time.monotonic() + 10
            while True:
                info = c.get_run("from-env")
                if info.ranks and info.ranks[0].uploads >= 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert info.config.world_size == 1
            assert [(r.rank, r.connected) for r in info.ranks] == [(0, True)]
            assert info.ranks[0].uploads >= 1
            assert [r.name for r in c.list_runs()] == ["from-env"]
    finally:
        mon.close()


def test_token_from_environment(clean_env, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ops admin {ADMIN_TOKEN}\n")
    os.chmod(tokens, 0o600)
    server = Spotterd(spotterd_path(), args=[f"--tokens_file={tokens}"], workdir=str(tmp_path))
    try:
        clean_env.setenv("SPOTTER_SERVER", server.target)
        with Client(token="") as c, pytest.raises(SpotterError) as ei:
            c.list_runs()
        assert ei.value.code.name == "UNAUTHENTICATED"
        clean_env.setenv("SPOTTER_TOKEN", ADMIN_TOKEN)
        with Client() as c:
            assert c.list_runs() == []
        # RunSession: target, run and token all from the environment.
        clean_env.setenv("SPOTTER_RUN", "tok-run")
        s = RunSession(config={"total_steps": 10, "world_size": 1, "peak_lr": 0.1},
                       require_server=True)
        assert (s.target, s.run) == (server.target, "tok-run")
        s.close()
        model = small_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        with pytest.raises(SpotterError) as ei:     # an explicit token beats SPOTTER_TOKEN
            Monitor(model, opt, run="tok-mon", total_steps=10, token="wrong-token-0123456789")
        assert ei.value.code.name == "UNAUTHENTICATED"
        model = small_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        mon = Monitor(model, opt, run="tok-mon", total_steps=10)
        assert mon.directive is not None
        mon.close()
        with Client() as c:
            assert sorted(r.name for r in c.list_runs()) == ["tok-mon", "tok-run"]
    finally:
        server.stop()


def test_torchrun_style_two_ranks(clean_env, spotterd, tmp_path):
    run, steps = "torchrun-1234", 10
    release = str(tmp_path / "release")
    outs = [str(tmp_path / f"rank{r}.json") for r in range(2)]
    base = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2",
                LOCAL_WORLD_SIZE="2", TORCHELASTIC_RUN_ID=run, SPOTTER_SERVER=spotterd.target,
                OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "worker", outs[r],
                               release, str(steps)],
                              env=dict(base, RANK=str(r), LOCAL_RANK=str(r)))
             for r in range(2)]
    try:
        with Client(spotterd.target) as c:
            deadline = time.monotonic() + 60
            connected = set()
            # One stream per job: rank 0 holds it and broadcasts the
            # directives (the default with a process group).
            while connected != {0}:
                assert time.monotonic() < deadline, f"ranks connected: {connected}"
                assert all(p.poll() is None for p in procs), "a rank exited early"
                try:
                    info = c.get_run(run)
                    connected = {r.rank for r in info.ranks if r.connected}
                except SpotterError:
                    pass  # not open yet
                time.sleep(0.05)
            open(release, "w").close()
            for p in procs:
                assert p.wait(timeout=30) == 0
            info = c.get_run(run)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert info.config.world_size == 2
    assert {r.rank for r in info.ranks} == {0}  # rank 1 never opened a stream
    assert {r.rank for r in info.ranks if r.uploads > 0} == {0}   # upload="rank0"
    for r in range(2):
        res = json.load(open(outs[r]))
        assert "WORLD_SIZE=2" in res["pre_init_error"]
        assert "init_process_group" in res["pre_init_error"]
        assert f"rank={1 - r} was passed" in res["conflict_error"]
        assert (res["rank"], res["world_size"], res["local_rank"], res["env_rank"]) == (r, 2, r, r)
        assert res["distributed"] is True
        assert (res["run"], res["server"]) == (run, spotterd.target)
        assert res["released"] and res["steps"] == steps
