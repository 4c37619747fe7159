"""`shardlog start` configuration: TOML file, SHARDLOG_* environment variables and flags
(each overriding the one before), and clear errors for bad values."""

from __future__ import annotations

import os
import subprocess

import pytest

import kwire
from conftest import free_port, shardlog_bin

pytestmark = pytest.mark.timeout(120)


def run_fail(args: list[str], tmp_path, env: dict | None = None) -> str:
    """Run shardlog expecting it to refuse to start; returns its output."""
    if not os.access(shardlog_bin(), os.X_OK):
        pytest.fail(f"no shardlog binary at {shardlog_bin()}", pytrace=False)
    e = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLOG_")}
    e.update(env or {})
    p = subprocess.run([shardlog_bin(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30, cwd=tmp_path, env=e)
    out = p.stdout.decode(errors="replace")
    assert p.returncode != 0, f"shardlog {' '.join(args)} should fail, exited 0:\n{out}"
    assert "panicked" not in out, out
    return out


def test_help_lists_the_flags(tmp_path):
    p = subprocess.run([shardlog_bin(), "start", "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=30)
    out = p.stdout.decode()
    assert p.returncode == 0, out
    for flag in ("--listen", "--data-dir", "--cores", "--config"):
        assert flag in out, f"{flag} missing from --help:\n{out}"


@pytest.mark.parametrize("args,word", [
    (["--listen", "not-an-address"], "listen"),
    (["--listen", "127.0.0.1:99999"], "listen"),
    (["--cores", "many"], "cores"),
    (["--config", "/nonexistent/shardlog.toml"], "shardlog.toml"),
])
def test_bad_flags_are_reported(tmp_path, args, word):
    out = run_fail(["start", "--data-dir", str(tmp_path / "d"), *args], tmp_path)
    assert word in out.lower() or args[-1] in out, f"error should name {word!r} or the value:\n{out}"


def test_bad_config_file_value_is_reported(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'listen = "127.0.0.1:{free_port()}"\ncores = "lots"\n')
    out = run_fail(["start", "--config", str(cfg), "--data-dir", str(tmp_path / "d")], tmp_path)
    assert "cores" in out, out


def test_unknown_config_key_is_reported(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('no_such_setting = 1\n')
    out = run_fail(["start", "--config", str(cfg), "--data-dir", str(tmp_path / "d")], tmp_path)
    assert "no_such_setting" in out, out


def test_config_file_env_and_flags_layer(tmp_path, make_broker):
    """The file sets the listen address; an env var overrides the file; a flag overrides both."""
    p_file, p_env, p_flag = free_port(), free_port(), free_port()
    cfg = tmp_path / "shardlog.toml"
    cfg.write_text(f'listen = "127.0.0.1:{p_file}"\ndata_dir = "{tmp_path / "from-file"}"\ncores = 1\n')

    b = make_broker("file", argv=["start", "--config", str(cfg)], port=p_file)
    assert (tmp_path / "from-file").is_dir(), "data_dir from the file was not used"
    b.stop()

    b = make_broker("env", argv=["start", "--config", str(cfg)], port=p_env,
                    env={"SHARDLOG_LISTEN": f"127.0.0.1:{p_env}"})
    with kwire.Conn("127.0.0.1", p_env) as c:
        assert c.metadata(None)["brokers"][0]["port"] == p_env
    b.stop()

    b = make_broker("flag", argv=["start", "--config", str(cfg), "--listen", f"127.0.0.1:{p_flag}"],
                    port=p_flag, env={"SHARDLOG_LISTEN": f"127.0.0.1:{p_env}"})
    with kwire.Conn("127.0.0.1", p_flag) as c:
        assert c.metadata(None)["brokers"][0]["port"] == p_flag
    b.stop()


# --- the operator CLI as a new user meets it ---------------------------------------------
# Where the broker list comes from (--brokers, --profile, SHARDLOG_BROKERS, SHARDLOG_PROFILE, the
# profile file, the default), the errors for a missing topic or group, and
# `topic delete-records`.

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from util import unique_topic  # noqa: E402


@pytest.fixture(scope="module")
def cli_broker(tmp_path_factory):
    """A broker started with the CLI's variables in its environment: it must leave them alone."""
    from conftest import Broker, _require_binary
    _require_binary()
    b = Broker(tmp_path_factory.mktemp("cli"), extra_args=["--admin-listen", ""],
               env={"SHARDLOG_BROKERS": "10.255.255.1:9092", "SHARDLOG_PROFILE": "prod"})
    b.start()
    yield b
    b.teardown()


def cli(args: list[str], home: Path, env: dict | None = None, stdin: str = "",
        rc: int | None = 0) -> subprocess.CompletedProcess:
    """Run the CLI with HOME at `home` (so no real profile file is read) and no SHARDLOG_*
    variables but those in `env`; checks the exit status when `rc` is not None."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("SHARDLOG_") and k != "XDG_CONFIG_HOME"}
    e["HOME"] = str(home)
    e.update(env or {})
    p = subprocess.run([shardlog_bin(), *args], input=stdin.encode(), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60, env=e)
    p.out = p.stdout.decode(errors="replace")  # type: ignore[attr-defined]
    p.err = p.stderr.decode(errors="replace")  # type: ignore[attr-defined]
    assert "panicked" not in p.err, p.err
    if rc is not None:
        assert p.returncode == rc, f"shardlog {' '.join(args)} exited {p.returncode}, not {rc}:\n{p.out}\n{p.err}"
    return p


def topics(p: subprocess.CompletedProcess) -> list[str]:
    return [t["name"] for t in json.loads(p.out)]


def test_the_broker_list_comes_from_flags_environment_or_a_profile(cli_broker, tmp_path):
    good = cli_broker.bootstrap
    bad = f"127.0.0.1:{free_port()}"
    short = ["--timeout-ms", "3000", "--format", "json"]
    t = unique_topic("cli-env")
    # SHARDLOG_BROKERS alone is enough.
    cli(["topic", "create", t], tmp_path, env={"SHARDLOG_BROKERS": good})
    assert t in topics(cli(["topic", "list", *short], tmp_path, env={"SHARDLOG_BROKERS": good}))
    # ... and --brokers beats it.
    down = cli(["topic", "list", *short, "--brokers", bad], tmp_path, env={"SHARDLOG_BROKERS": good}, rc=1)
    assert f"cannot reach the cluster at {bad} (from --brokers)" in down.err, down.err
    down = cli(["topic", "list", *short], tmp_path, env={"SHARDLOG_BROKERS": bad}, rc=1)
    assert "(from SHARDLOG_BROKERS)" in down.err and "unset it or give --brokers" in down.err, down.err

    # Profiles in ~/.config/shardlog/cli.toml.
    cfg = tmp_path / ".config" / "shardlog" / "cli.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'current_profile = "dev"\n[profiles.dev]\nbrokers = "{good}"\n'
                   f'[profiles.stale]\nbrokers = "{bad}"\n')
    assert t in topics(cli(["topic", "list", *short], tmp_path))
    down = cli(["topic", "list", *short, "--profile", "stale"], tmp_path, rc=1)
    assert f'from profile "stale" of {cfg}' in down.err and "--profile" in down.err, down.err
    down = cli(["topic", "list", *short], tmp_path, env={"SHARDLOG_PROFILE": "stale"}, rc=1)
    assert "selected by SHARDLOG_PROFILE" in down.err, down.err
    # Flags before the environment, the environment before the file.
    cli(["topic", "list", *short, "--brokers", good], tmp_path, env={"SHARDLOG_PROFILE": "stale"})
    cli(["topic", "list", *short, "--profile", "dev"], tmp_path, env={"SHARDLOG_BROKERS": bad})
    cli(["topic", "list", *short], tmp_path, env={"SHARDLOG_BROKERS": good, "SHARDLOG_PROFILE": "stale"})
    # SHARDLOG_CLI_CONFIG names another file; XDG_CONFIG_HOME another directory.
    other = tmp_path / "other.toml"
    other.write_text(f'[profiles.default]\nbrokers = "{good}"\n')
    cli(["topic", "list", *short], tmp_path, env={"SHARDLOG_CLI_CONFIG": str(other)})
    xdg = tmp_path / "xdg"
    (xdg / "shardlog").mkdir(parents=True)
    (xdg / "shardlog" / "cli.toml").write_text(f'current_profile = "x"\n[profiles.x]\nbrokers = "{bad}"\n')
    down = cli(["topic", "list", *short], tmp_path, env={"XDG_CONFIG_HOME": str(xdg)}, rc=1)
    assert 'from profile "x"' in down.err, down.err

    # Mistakes are usage errors that say what is wrong.
    unknown = cli(["topic", "list", "--profile", "prod"], tmp_path, rc=2)
    assert '"prod"' in unknown.err and "dev, stale" in unknown.err, unknown.err
    cfg.write_text('[profiles.dev]\nbroker = "h:1"\n')
    typo = cli(["topic", "list"], tmp_path, rc=2)
    assert str(cfg) in typo.err and "broker" in typo.err, typo.err

    # The help says all of this.
    for sub in (["topic"], ["produce"], ["consume"], ["group"], ["cluster"]):
        h = cli([*sub, "--help"], tmp_path).out
        for word in ("--profile", "SHARDLOG_BROKERS", "SHARDLOG_PROFILE", "~/.config/shardlog/cli.toml"):
            assert word in h, f"{word} missing from shardlog {sub[0]} --help:\n{h}"

    # The broker ignored the CLI's variables in its own environment, quietly.
    assert "SHARDLOG_BROKERS" not in cli_broker.log_text() and "SHARDLOG_PROFILE" not in cli_broker.log_text()


def test_unreachable_default_suggests_brokers(tmp_path):
    """With nothing configured the CLI tries 127.0.0.1:9092; when that fails it says so and
    says how to point it elsewhere."""
    p = cli(["topic", "list", "--timeout-ms", "2000"], tmp_path, rc=None)
    if p.returncode == 0:
        pytest.skip("a broker is listening on 127.0.0.1:9092 on this machine")
    assert p.returncode == 1, p.err
    assert "cannot reach the cluster at 127.0.0.1:9092 (the built-in default" in p.err, p.err
    for word in ("--brokers", "SHARDLOG_BROKERS", "cli.toml"):
        assert word in p.err, p.err


def test_produce_to_a_missing_topic(cli_broker, make_broker, tmp_path):
    b = ["--brokers", cli_broker.bootstrap]
    # By default produce creates nothing (a typo must not make a topic): the error says the
    # topic does not exist and how to create it.
    t = unique_topic("cli-missing")
    p = cli(["produce", t, *b], tmp_path, stdin="x\n", rc=1)
    assert f'topic "{t}" does not exist' in p.err, p.err
    assert "--allow-auto-topic-creation" in p.err and f"shardlog topic create {t}" in p.err, p.err
    assert "kafka error" not in p.err, p.err
    assert t not in topics(cli(["topic", "list", "--format", "json", *b], tmp_path))
    gone = cli(["consume", t, "-n", "1", *b], tmp_path, rc=1)
    assert "does not exist" in gone.err and "kafka error" not in gone.err, gone.err

    # Asked to, the cluster creates it (auto-creation is on by default) and the CLI says so.
    p = cli(["produce", t, "--allow-auto-topic-creation", *b], tmp_path, stdin="one\ntwo\n")
    assert f"topic {t} did not exist; the cluster created it" in p.err, p.err
    assert cli(["consume", t, "--from-beginning", "-n", "2", *b], tmp_path).out.split() == ["one", "two"]

    # A cluster with auto-creation off: the error says so.
    off = make_broker("noauto", extra_args=["--admin-listen", ""],
                      env={"SHARDLOG_AUTO_CREATE_TOPICS": "false"})
    t = unique_topic("cli-missing")
    p = cli(["produce", t, "--allow-auto-topic-creation", "--brokers", off.bootstrap], tmp_path,
            stdin="x\n", rc=1)
    assert f'topic "{t}" does not exist' in p.err, p.err
    assert "its auto.create.topics.enable is off" in p.err, p.err
    assert f"shardlog topic create {t}" in p.err, p.err
    bad = cli(["produce", "bad name!", "--brokers", off.bootstrap], tmp_path, stdin="x\n", rc=2)
    assert "not a valid topic name" in bad.err, bad.err


def test_group_describe_of_a_missing_group_fails(cli_broker, tmp_path):
    b = ["--brokers", cli_broker.bootstrap]
    t = unique_topic("cli-grp")
    g = unique_topic("cli-group")
    missing = unique_topic("cli-nogroup")
    cli(["topic", "create", t, *b], tmp_path)
    cli(["produce", t, *b], tmp_path, stdin="a\nb\nc\n")
    cli(["consume", t, "--group", g, "--from-beginning", "-n", "2", *b], tmp_path)

    p = cli(["group", "describe", missing, *b], tmp_path, rc=1)
    assert f'group "{missing}" does not exist' in p.err, p.err
    assert "state=Dead" not in p.out, p.out
    p = cli(["group", "describe", missing, "--format", "json", *b], tmp_path, rc=1)
    assert p.out == "", p.out
    # An existing group next to a missing one: the existing one is shown, the exit status is 1.
    p = cli(["group", "describe", g, missing, *b], tmp_path, rc=1)
    assert f"GROUP {g}" in p.out and missing in p.err, (p.out, p.err)
    d = json.loads(cli(["group", "describe", g, "--format", "json", *b], tmp_path).out)
    assert d["state"] == "Empty" and d["total_lag"] == 1, d
    p = cli(["group", "delete", missing, *b], tmp_path, rc=1)
    assert "does not exist" in p.err, p.err


def low_high(bootstrap: str, topic: str, partition: int) -> tuple[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "cli-watermarks"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
    finally:
        c.close()


def test_topic_delete_records(cli_broker, tmp_path):
    bs = cli_broker.bootstrap
    b = ["--brokers", bs]
    t = unique_topic("cli-trim")
    cli(["topic", "create", t, "--partitions", "3", *b], tmp_path)
    for p in range(3):
        cli(["produce", t, "--partition", str(p), *b], tmp_path,
            stdin="".join(f"p{p}-{i}\n" for i in range(100)))

    # Which partitions must be said: --partition or --all-partitions.
    p = cli(["topic", "delete-records", t, "--before", "30", *b], tmp_path, rc=2)
    assert "--all-partitions" in p.err, p.err
    cli(["topic", "delete-records", t, *b], tmp_path, rc=2)

    r = json.loads(cli(["topic", "delete-records", t, "--before", "30", "--all-partitions",
                        "--format", "json", *b], tmp_path).out)
    assert [(x["partition"], x["log_start_before"], x["log_start"], x["deleted"]) for x in r["partitions"]] == \
        [(p, 0, 30, 30) for p in range(3)], r
    assert [low_high(bs, t, p) for p in range(3)] == [(30, 100)] * 3
    first = cli(["consume", t, "--partition", "1", "--from-beginning", "-n", "1", "--output", "json", *b],
                tmp_path).out
    assert json.loads(first.splitlines()[0])["offset"] == 30, first

    # Per-partition offsets; a dry run changes nothing.
    dry = json.loads(cli(["topic", "delete-records", t, "--offset", "0=50", "--offset", "2=end",
                          "--dry-run", "--format", "json", *b], tmp_path).out)
    assert [(x["partition"], x["log_start"]) for x in dry["partitions"]] == [(0, 50), (2, 100)], dry
    assert [low_high(bs, t, p) for p in range(3)] == [(30, 100)] * 3
    p = cli(["topic", "delete-records", t, "--offset", "0=50", "--offset", "2=end", *b], tmp_path)
    assert "PARTITION" in p.out and "DELETED" in p.out, p.out
    assert [low_high(bs, t, p) for p in range(3)] == [(50, 100), (30, 100), (100, 100)]

    # Offsets past the end are refused before anything is deleted.
    p = cli(["topic", "delete-records", t, "--offset", "1=60", "--offset", "0=101", *b], tmp_path, rc=2)
    assert "past the end of the log (100)" in p.err and "nothing was deleted" in p.err, p.err
    assert low_high(bs, t, 1) == (30, 100)
    # Below the current start: nothing to delete, not an error.
    r = json.loads(cli(["topic", "delete-records", t, "--partition", "0", "--before", "10",
                        "--format", "json", *b], tmp_path).out)
    assert r["partitions"][0]["log_start"] == 50 and r["partitions"][0]["deleted"] == 0, r
    # Unknown partitions and topics.
    p = cli(["topic", "delete-records", t, "--partition", "7", "--before", "1", *b], tmp_path, rc=2)
    assert "no partition 7" in p.err, p.err
    p = cli(["topic", "delete-records", unique_topic("cli-none"), "--all-partitions", "--before", "1", *b],
            tmp_path, rc=1)
    assert "does not exist" in p.err, p.err
