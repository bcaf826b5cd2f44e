"""ray-cluster.yaml: Ray's own validation accepts it, and `ray up` really brings sigmaray up.

The unit tests read the file the way `ray up` does (ray.autoscaler's prepare_config and the JSON
schema ray/autoscaler/ray-schema.json). The integration test runs the real launcher against
this machine over SSH: `ray up -y` on a copy with head_ip 127.0.0.1 and no workers, `ray exec`
for `ray status` and `sigmaray status`, then `ray down -y`.

Isolation, because `ray up` on localhost runs the setup and start commands on this machine:
  - it logs into a throw-away user whose home is a temp dir, so ~/sigmaray, its .venv,
    ~/.bashrc and ~/ray_bootstrap_config.yaml are the temp dir's, never /work/main or /root;
  - `ray stop` (in the start commands and in `ray down`) kills every Ray process it may signal;
    as that user it cannot touch anyone else's Ray;
  - the copy syncs a temp copy of the project whose cluster.yaml names a closed Kafka port, so
    the supervisor never joins a real broker's consumer group;
  - sshd listens on 127.0.0.1 on a free port (the launcher reaches it through
    auth.ssh_proxy_command), Ray on free ports with RAY_TMPDIR in the temp dir.
Everything it started (sshd, the user's processes, the user) is removed afterwards.
"""

from __future__ import annotations

import copy
import getpass
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RAY_CLUSTER_YAML = ROOT / "ray-cluster.yaml"
VENV_BIN = Path(sys.executable).parent


def _raw() -> dict[str, Any]:
    return yaml.safe_load(RAY_CLUSTER_YAML.read_text(encoding="utf-8"))


def _prepared(config: dict[str, Any] | None = None) -> dict[str, Any]:
    """What `ray up` works from: defaults merged, local node type filled in, schema-checked."""
    from ray.autoscaler._private.commands import _bootstrap_config

    return _bootstrap_config(copy.deepcopy(config or _raw()), no_config_cache=True)


# --- the file as Ray reads it ---------------------------------------------------------------


def test_ray_cluster_yaml_passes_ray_up_preparation_and_the_launcher_json_schema() -> None:
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(_raw())
    validate_config(prepared)  # ray-schema.json plus Ray's own consistency checks
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(prepared, schema)
    assert _prepared()["cluster_name"] == "sigmaray"


def test_ray_cluster_yaml_has_no_keys_ray_would_reject_or_ignore() -> None:
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    unknown = set(_raw()) - set(schema["properties"])
    assert not unknown, f"keys the launcher does not know: {unknown}"


def test_rays_validation_rejects_a_misspelled_key_and_a_local_provider_without_head_ip() -> None:
    import jsonschema

    misspelled = _raw()
    misspelled["setup_comands"] = misspelled.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_comands"):
        _prepared(misspelled)
    no_head = _raw()
    del no_head["provider"]["head_ip"]
    with pytest.raises(Exception, match="head_ip"):
        _prepared(no_head)


def test_ray_cluster_yaml_uses_the_local_provider_with_editable_head_and_worker_ips() -> None:
    raw = _raw()
    provider = raw["provider"]
    assert provider["type"] == "local"
    assert isinstance(provider["head_ip"], str) and provider["head_ip"]
    assert isinstance(provider["worker_ips"], list)
    assert {"ssh_user", "ssh_private_key"} <= set(raw["auth"])
    text = RAY_CLUSTER_YAML.read_text(encoding="utf-8")
    for key in ("head_ip", "worker_ips", "ssh_user", "ssh_private_key"):
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{key}:"))
        assert "# EDIT" in line, f"{key} is not marked as a value to edit: {line!r}"
    # The local provider launches every listed worker and no more.
    node_type = _prepared()["available_node_types"]["local.cluster.node"]
    assert node_type["min_workers"] == node_type["max_workers"] == len(provider["worker_ips"])


def test_ray_cluster_yaml_copies_the_project_to_home_sigmaray_without_local_build_state() -> None:
    raw = _raw()
    assert raw["file_mounts"] == {"~/sigmaray": "."}
    for excluded in (".venv", ".git", "**/__pycache__"):
        assert excluded in raw["rsync_exclude"]


def test_ray_cluster_yaml_setup_installs_the_project_into_a_python311_venv_on_every_node() -> None:
    raw = _raw()
    assert "worker_setup_commands" not in raw  # the head's own commands only create the token
    setup = _prepared()
    for commands in (setup["head_setup_commands"], setup["worker_setup_commands"]):
        joined = "\n".join(commands)
        assert "python3.11 -m venv ~/sigmaray/.venv" in joined
        assert re.search(r"~/sigmaray/\.venv/bin/python -m pip install .*-e ~/sigmaray\b", joined)
        assert "$HOME/sigmaray/.venv/bin:$PATH" in joined  # `ray down`/`ray attach` run a bare `ray`
        # Logins (`ray exec`, `ray attach`) send the token: `ray status`, `ray job logs`, `sigmaray status`.
        assert "export RAY_AUTH_MODE=token" in joined


# --- token authentication: created on the head, copied to the workers, required everywhere ---


def _token_command() -> str:
    (command,) = [c for c in _raw()["head_setup_commands"] if "auth_token" in c]
    return command


def _without_ray_auth_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    return {**env, "HOME": str(home), "RAY_USAGE_STATS_ENABLED": "0"}


def test_head_setup_creates_a_private_random_ray_token_once_and_keeps_it_on_later_ray_ups(tmp_path: Path) -> None:
    if not shutil.which("python3.11"):
        pytest.skip("the token command runs python3.11, which ray-cluster.yaml requires on every node")
    env = _without_ray_auth_env(tmp_path)
    first = subprocess.run(["bash", "-c", _token_command()], check=False, env=env, capture_output=True, text=True,
                           timeout=60)
    assert first.returncode == 0, first.stderr
    token_file = tmp_path / ".ray/auth_token"
    token = token_file.read_text()
    assert re.fullmatch(r"[0-9a-f]{64}", token)  # 256 random bits
    assert token not in first.stdout + first.stderr  # never in `ray up`'s output
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".ray").stat().st_mode & 0o077 == 0
    token_file.chmod(0o644)  # e.g. copied in by hand: the next `ray up` makes it private again
    again = subprocess.run(["bash", "-c", _token_command()], check=False, env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0, again.stderr
    assert token_file.read_text() == token  # the running workers' token stays valid
    assert token_file.stat().st_mode & 0o777 == 0o600


def test_the_head_token_is_copied_to_every_worker_and_workers_never_make_their_own() -> None:
    prepared = _prepared()
    # The head's autoscaler rsyncs (-a, mode kept) these head paths to each worker before the
    # worker's setup and start commands; the launcher's own ~/.ray is never involved.
    assert prepared["cluster_synced_files"] == ["~/.ray/auth_token"]
    assert "~/.ray/auth_token" not in _raw()["file_mounts"]
    makes_a_token = ("token_hex", "get-auth-token", "> ~/.ray/auth_token")
    assert not any(m in c for c in prepared["worker_setup_commands"] for m in makes_a_token)
    assert any(m in _token_command() for m in makes_a_token)
    assert _token_command() in prepared["head_setup_commands"]  # Ray's merge kept the head's own command


def test_every_ray_start_and_the_job_submission_require_token_auth() -> None:
    raw = _raw()
    starts = [c for c in raw["head_start_ray_commands"] + raw["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        # Explicit, so a node never starts open: without the token `ray start` refuses (below).
        assert "RAY_AUTH_MODE=token ~/sigmaray/.venv/bin/ray start" in command
    submit = next(c for c in raw["head_start_ray_commands"] if "ray job submit" in c)
    assert "RAY_AUTH_MODE=token ~/sigmaray/.venv/bin/ray job submit" in submit  # the job server wants it too
    assert "RAY_AUTH_MODE=disabled" not in RAY_CLUSTER_YAML.read_text(encoding="utf-8")


@pytest.mark.parametrize("role", ["head", "worker"])
def test_ray_start_in_token_mode_refuses_to_run_on_a_node_without_the_token(role: str, tmp_path: Path) -> None:
    """What a node whose token did not arrive does: fails `ray up`, rather than run without auth.
    (Ray checks the token before it starts anything or reaches the head, so this starts nothing.)"""
    where = ["--head", f"--port={_free_port()}"] if role == "head" else [f"--address=127.0.0.1:{_free_port()}"]
    env = {**_without_ray_auth_env(tmp_path), "RAY_AUTH_MODE": "token"}
    result = subprocess.run(
        [str(VENV_BIN / "ray"), "start", *where, f"--temp-dir={tmp_path / 'ray'}", "--block"],
        check=False, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode != 0
    assert "no authentication token was found" in result.stdout + result.stderr


def test_ray_cluster_yaml_starts_ray_from_the_venv_in_the_project_directory() -> None:
    raw = _raw()
    head, worker = raw["head_start_ray_commands"], raw["worker_start_ray_commands"]
    head_start = next(c for c in head if "ray start --head" in c)
    worker_start = next(c for c in worker if "ray start" in c)
    for command in (head_start, worker_start):
        assert command.startswith("cd ~/sigmaray && ")  # Ray workers inherit the directory
        assert "~/sigmaray/.venv/bin/ray start" in command
    assert "--port=6379" in head_start and "--autoscaling-config=~/ray_bootstrap_config.yaml" in head_start
    assert "--address=$RAY_HEAD_IP:6379" in worker_start
    # The dashboard (and its job server) on the head's loopback only; metrics on a port a firewall
    # rule can name (Ray binds it to every interface of a multi-node cluster: README).
    assert "--dashboard-host=127.0.0.1" in head_start
    for command in (head_start, worker_start):
        assert "--metrics-export-port=8080" in command
    assert head[0] == worker[0] == "~/sigmaray/.venv/bin/ray stop"  # `ray up` again restarts cleanly


def test_ray_cluster_yaml_head_starts_the_supervisor_as_a_ray_job_after_ray() -> None:
    head = _raw()["head_start_ray_commands"]
    start = next(i for i, c in enumerate(head) if "ray start --head" in c)
    supervisor = [i for i, c in enumerate(head) if "sigmaray run" in c]
    assert supervisor and supervisor[0] > start
    command = head[supervisor[0]]
    assert "ray job submit --no-wait --submission-id sigmaray-supervisor" in command
    # ray job submit quotes its words, so the entrypoint must be one plain command.
    entrypoint = command.split("--submission-id sigmaray-supervisor --", 1)[1].split("&&")[0].split()
    assert entrypoint == [
        "~/sigmaray/.venv/bin/sigmaray", "run", "--address", "auto", "--config", "~/sigmaray/cluster.yaml",
    ]  # fmt: skip
    assert "exit 1" in command  # `ray up` fails when the job server never answers


def test_cluster_yaml_next_to_it_is_a_valid_sigmaray_config() -> None:
    from cluster.config import load_config

    assert load_config(ROOT / "cluster.yaml").workers >= 1


# --- the real thing: ray up / exec / down against 127.0.0.1 ---------------------------------


def _psutil() -> Any:
    import importlib

    importlib.import_module("ray")  # Ray ships psutil in ray/thirdparty_files and puts it on sys.path
    return importlib.import_module("psutil")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Privileged:
    """Runs commands as root: directly, or through passwordless sudo."""

    def __init__(self) -> None:
        if os.geteuid() == 0:
            self.prefix: list[str] = []
        elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], check=False, capture_output=True).returncode == 0:
            self.prefix = ["sudo", "-n"]
        else:
            pytest.skip(
                "needs root or passwordless sudo: the test logs in as a throw-away user, because "
                "`ray down` runs `ray stop`, which kills every Ray process the SSH user may signal"
            )

    def run(self, *args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.prefix, *args], check=check, text=True, capture_output=True, **kwargs)

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*self.prefix, *args], **kwargs)

    def install(self, src: Path, dst: Path, owner: str, mode: str) -> None:
        self.run("install", "-o", owner, "-g", owner, "-m", mode, str(src), str(dst))


def _ensure_ssh_tools(priv: _Privileged) -> None:
    def missing() -> list[str]:
        tools = {"ssh": shutil.which("ssh"), "ssh-keygen": shutil.which("ssh-keygen"), "rsync": shutil.which("rsync")}
        tools["sshd"] = "/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None
        return sorted(name for name, path in tools.items() if path is None)

    if missing() and shutil.which("apt-get"):
        result = priv.run("bash", str(ROOT / "scripts/ray/install-ssh-tools.sh"), check=False, timeout=600)
        if result.returncode:
            pytest.fail(f"installing the SSH tools failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    if missing():
        pytest.skip(f"no {', '.join(missing())} and no apt-get to install them (scripts/ray/install-ssh-tools.sh)")
    for tool in ("useradd", "userdel"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            pytest.skip(f"no {tool}: the test needs a throw-away SSH user")
    if subprocess.run(["/usr/bin/python3.11", "-c", "import ensurepip, venv"], check=False, capture_output=True).returncode:
        pytest.skip("no /usr/bin/python3.11 with venv for the SSH user (ray-cluster.yaml needs python3.11 on nodes)")


class LocalNode:
    """A throw-away user reachable over SSH at 127.0.0.1, with a private sshd on a free port."""

    def __init__(self, priv: _Privileged) -> None:
        self.priv = priv
        self.base = Path(tempfile.mkdtemp(prefix="srt-", dir="/tmp"))  # short: Ray's socket paths
        self.base.chmod(0o755)
        self.user = f"srt{os.getpid()}"
        self.home = self.base / "home"
        self.ray_tmp = self.base / "t"
        self.key = self.base / "id_ed25519"
        self.ssh_port = _free_port()
        self.sshd: subprocess.Popen[bytes] | None = None
        self.uid: int | None = None

    def start(self) -> None:
        p = self.priv
        # Password "*": no password login, but not locked ("!"), which sshd would refuse.
        p.run("useradd", "--create-home", "--home-dir", str(self.home), "--shell", "/bin/bash", "--password", "*",
              self.user)  # fmt: skip
        self.uid = pwd.getpwnam(self.user).pw_uid
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        host_key = self.base / "ssh_host_ed25519_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
        p.run("install", "-d", "-o", self.user, "-g", self.user, "-m", "700", str(self.home / ".ssh"))
        p.install(self.key.with_suffix(".pub"), self.home / ".ssh/authorized_keys", self.user, "600")
        p.run("install", "-d", "-o", self.user, "-g", self.user, "-m", "700", str(self.ray_tmp))
        # Login shells of this user: Ray under the temp dir, no usage-stats prompt. At the top of
        # ~/.bashrc, which `ray exec` reads (bash --login -i) through ~/.profile.
        bashrc = self.base / "bashrc"
        original = p.run("cat", str(self.home / ".bashrc"), check=False).stdout  # from /etc/skel, if any
        bashrc.write_text(
            f"export RAY_TMPDIR={self.ray_tmp}\nexport RAY_USAGE_STATS_ENABLED=0\n"
            f"export PIP_DISABLE_PIP_VERSION_CHECK=1\n{original}"
        )
        p.install(bashrc, self.home / ".bashrc", self.user, "644")
        sshd_config = self.base / "sshd_config"
        sshd_config.write_text(
            f"Port {self.ssh_port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {self.base}/sshd.pid\n"
            f"AllowUsers {self.user}\nPermitRootLogin no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nAuthorizedKeysFile .ssh/authorized_keys\n"
            "StrictModes yes\nMaxStartups 100\nMaxSessions 100\n"
        )
        p.run("mkdir", "-p", "/run/sshd")  # sshd's privilege-separation directory
        p.run("/usr/sbin/sshd", "-t", "-f", str(sshd_config))
        with open(self.base / "sshd.log", "wb") as sshd_log:  # sshd keeps its own descriptor
            self.sshd = p.popen(
                "/usr/sbin/sshd", "-D", "-e", "-f", str(sshd_config), stdout=subprocess.DEVNULL, stderr=sshd_log,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            probe = subprocess.run([*self.ssh_command(), "true"], check=False, capture_output=True, text=True)
            if probe.returncode == 0:
                return
            if self.sshd.poll() is not None or time.monotonic() > deadline:
                log = (self.base / "sshd.log").read_text(errors="replace")
                pytest.fail(f"sshd on 127.0.0.1:{self.ssh_port} not reachable: {probe.stderr}\nsshd log:\n{log}")
            time.sleep(0.3)

    def proxy_command(self) -> str:
        return f"{sys.executable} {ROOT / 'scripts/ray/tcp_stdio_relay.py'} 127.0.0.1 {self.ssh_port}"

    def ssh_command(self) -> list[str]:
        return [
            "ssh", "-i", str(self.key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", f"ProxyCommand={self.proxy_command()}", f"{self.user}@127.0.0.1",
        ]  # fmt: skip

    def processes(self, include_sshd: bool = False) -> list[str]:
        psutil = _psutil()

        found = []
        for proc in psutil.process_iter(["uids", "name", "cmdline"]):
            uids = proc.info["uids"]
            if uids is None or self.uid not in (uids.real, uids.effective):
                continue
            if not include_sshd and proc.info["name"] == "sshd":
                continue  # the launcher's SSH connections (ControlPersist) close on their own
            found.append(f"{proc.pid} {' '.join(proc.info['cmdline'] or [proc.info['name']])}")
        return found

    def stop(self) -> None:
        try:
            if self.uid is not None:  # everything the throw-away user still runs was started here
                psutil = _psutil()
                procs = [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and self.uid in p.info["uids"]]
                for proc in procs:
                    self.priv.run("kill", "-TERM", str(proc.pid), check=False)
                _, alive = psutil.wait_procs(procs, timeout=10)
                for proc in alive:
                    self.priv.run("kill", "-KILL", str(proc.pid), check=False)
        finally:
            if self.sshd is not None and self.sshd.poll() is None:
                self.sshd.terminate()
                try:
                    self.sshd.wait(10)
                except subprocess.TimeoutExpired:
                    self.sshd.kill()
                    self.sshd.wait(10)
            if self.uid is not None:
                self.priv.run("userdel", self.user, check=False)
            self.priv.run("rm", "-rf", str(self.base), check=False)


@pytest.fixture
def local_node() -> Iterator[LocalNode]:
    if not sys.platform.startswith("linux"):
        pytest.skip("the local-provider trial needs Linux (sshd, useradd)")
    priv = _Privileged()
    _ensure_ssh_tools(priv)
    node = LocalNode(priv)
    try:
        node.start()
        yield node
    finally:
        node.stop()


def _test_copy_of_project(node: LocalNode, dest: Path) -> dict[str, Any]:
    """A copy of the project to sync, and a copy of ray-cluster.yaml pointing at `node`."""
    shutil.copytree(
        ROOT, dest,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".hypothesis", "*.egg-info"
        ),
    )  # fmt: skip
    # The supervisor must not join a real broker's consumer group: a closed port.
    (dest / "cluster.yaml").write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": f"127.0.0.1:{_free_port()}", "group_id": node.user},
                "workers": 1,
                "rules": {"paths": ["rules"]},
            }
        )
    )
    config = _raw()
    config["cluster_name"] = f"sigmaray-it-{node.user}"
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    # Ray has no SSH port setting; its ssh_proxy_command reaches the sshd on the free port.
    config["auth"] = {"ssh_user": node.user, "ssh_private_key": str(node.key),
                      "ssh_proxy_command": node.proxy_command()}
    ports = {
        "--port": _free_port(),
        "--dashboard-port": _free_port(),
        "--ray-client-server-port": _free_port(),
        "--dashboard-agent-listen-port": _free_port(),
    }
    extra = " ".join(f"{flag}={port}" for flag, port in ports.items() if flag != "--port")
    starts = []
    for command in config["head_start_ray_commands"]:
        if "ray start --head" in command:
            assert "--port=6379" in command and "--metrics-export-port=8080" in command
            command = command.replace("--port=6379", f"--port={ports['--port']} {extra}")
            command = command.replace("--metrics-export-port=8080", f"--metrics-export-port={_free_port()}")
        starts.append(command)
    config["head_start_ray_commands"] = starts
    return config


def _ray(args: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    ray = VENV_BIN / "ray" if (VENV_BIN / "ray").exists() else Path(shutil.which("ray") or "ray")
    return subprocess.run(
        [str(ray), *args], check=False, cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _remove_ssh_control_dir(cluster_name: str) -> None:
    """The launcher's SSH ControlPath directory for this cluster (SSHCommandRunner's naming)."""
    user_dir = Path("/tmp") / f"ray_ssh_{hashlib.sha256(getpass.getuser().encode()).hexdigest()[:10]}"
    shutil.rmtree(user_dir / hashlib.sha256(cluster_name.encode()).hexdigest()[:10], ignore_errors=True)
    try:
        user_dir.rmdir()  # only when no other cluster's directory is left in it
    except OSError:
        pass


def _tail(result: subprocess.CompletedProcess[str], chars: int = 6000) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout[-chars:]}\nstderr:\n{result.stderr[-chars:]}"


@pytest.mark.ssh
@pytest.mark.slow
def test_ray_up_on_localhost_installs_sigmaray_starts_ray_and_the_supervisor_and_ray_down_stops_them(
    local_node: LocalNode, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    config = _test_copy_of_project(local_node, project)
    config_file = tmp_path / "ray-cluster.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    # The launcher's own state (cluster state file, lock, config cache) stays in tmp_path too.
    client_tmp = tmp_path / "client-tmp"
    client_tmp.mkdir()
    env = {**os.environ, "RAY_TMPDIR": str(client_tmp), "TMPDIR": str(client_tmp), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    timings: dict[str, float] = {}

    def ray(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        started = time.monotonic()
        result = _ray(list(args), project, env, timeout)
        timings[args[0]] = timings.get(args[0], 0) + time.monotonic() - started
        return result

    def ray_exec(command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return ray("exec", str(config_file), command, timeout=timeout)

    up_done = False
    try:
        up = ray("up", "-y", "--no-config-cache", str(config_file), timeout=900)
        up_done = True
        assert up.returncode == 0, f"ray up failed:\n{_tail(up)}"
        home = local_node.home
        assert (home / "sigmaray/pyproject.toml").is_file()  # file_mounts synced the project copy
        assert not (home / "sigmaray/.git").exists()
        assert (home / "sigmaray/.venv/bin/sigmaray").is_file()  # setup_commands installed it
        token = local_node.priv.run("stat", "-c", "%a %U", str(home / ".ray/auth_token")).stdout.split()
        assert token == ["600", local_node.user]  # head_setup_commands created the cluster's token

        status = ray_exec("ray status")  # a bare `ray`: the PATH line setup added to ~/.bashrc
        assert status.returncode == 0, f"ray status failed:\n{_tail(status)}"
        assert "Active:" in status.stdout and "local.cluster.node" in status.stdout, status.stdout
        print(status.stdout[status.stdout.find("Node status") :])

        # Ray's workers run in ~/sigmaray, so cluster.yaml's relative rule paths resolve.
        probe = (
            "import os, ray; ray.init(address='auto', logging_level='ERROR'); "
            "print('CWD=' + ray.get(ray.remote(lambda: os.getcwd()).remote()))"
        )
        cwd = ray_exec(f"cd ~/sigmaray && .venv/bin/python -c {shlex.quote(probe)}")
        assert f"CWD={home / 'sigmaray'}" in cwd.stdout, _tail(cwd)

        # The head's start command submitted `sigmaray run --address auto`, which created the
        # detached supervisor; `sigmaray status` finds it. (Kafka is unreachable on purpose: the
        # supervisor starts its worker anyway and waits for the broker to assign partitions.)
        deadline = time.monotonic() + 120
        while True:
            supervisor = ray_exec("cd ~/sigmaray && .venv/bin/sigmaray status --address auto --json")
            started = supervisor.returncode == 0 and json.loads(supervisor.stdout.strip().splitlines()[-1])["workers"]
            if started or time.monotonic() > deadline:  # the supervisor exists, then starts its worker
                break
            time.sleep(3)
        logs = ray_exec("ray job logs sigmaray-supervisor")
        assert supervisor.returncode == 0, f"no supervisor:\n{_tail(supervisor)}\njob logs:\n{_tail(logs)}"
        report = json.loads(supervisor.stdout.strip().splitlines()[-1])
        assert len(report["workers"]) == 1, report
        job = ray_exec("ray job status sigmaray-supervisor")
        assert job.returncode == 0 and "sigmaray-supervisor" in job.stdout + job.stderr, _tail(job)
        print("supervisor job log:", logs.stdout[logs.stdout.find("Running entrypoint") :], sep="\n")

        down = ray("down", "-y", str(config_file), timeout=300)
        assert down.returncode == 0, f"ray down failed:\n{_tail(down)}"
        up_done = False
        deadline = time.monotonic() + 30
        while local_node.processes() and time.monotonic() < deadline:
            time.sleep(1)
        assert not local_node.processes(), "left running after ray down:\n" + "\n".join(local_node.processes())
    finally:
        if up_done:  # the test failed with the cluster up: take it down before the node goes
            ray("down", "-y", str(config_file), timeout=300)
        _remove_ssh_control_dir(config["cluster_name"])
        print(f"ray CLI timings (s): { {k: round(v, 1) for k, v in timings.items()} }")
