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
