"""The playbook against fresh Debian 12 and Ubuntu 24.04 root filesystems, for real.

`ansible/rootfs.sh` makes a minimal tree of each (debootstrap, cached as a tarball under
build/os/; no Python in it); the playbook provisions it through the chroot connection with
the offline bundle from `make bundle`, inside a network namespace with no network at all:
Python, nginx, nftables and the rest must come from the bundle (the tree's own apt sources
still name the distribution's mirror, which cannot be reached). The firewall role applies
its rules there too. Then the appliance and nginx are started inside the tree and checked
through nginx over TLS (health, sign-in with the vaulted password, upload limit, redirect,
HSTS; Debian's run with a generated CA, Ubuntu's with a customer's certificate), the
rendered nftables ruleset is loaded into throwaway network namespaces (never this
machine's) and probed, and a second run must change nothing. Secrets are made here, at
test time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from appliance.auth import totp

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
ANSIBLE_BIN = REPO / ".venv-ansible" / "bin"
BUILD = REPO / "build" / "ansible-test"
ROOTFS = BUILD / "rootfs"
WORK = BUILD / "work"
OS_CACHE = REPO / "build" / "os"
BUNDLE_DIR = REPO / "build" / "bundle"
TARGETS = ("debian-12", "ubuntu-24.04")
HTTP_PORT = 18080
HTTPS_PORT = 18443
ALLOWED_NET = "198.51.100.0/24"  # documentation range, only inside our namespaces
SERVER_NAME = "localhost"
MOUNTS = ("proc", "sys", "dev", "dev/pts")


@dataclass
class Target:
    """The provisioned root filesystem and what the test knows about it."""

    os: str
    rootfs: Path
    netns: str
    ca_file: Path
    customer_cert: bool
    inventory: Path
    vault_pass_file: Path
    admin_password: str
    secrets: list[str]
    app_port: int
    first_run: subprocess.CompletedProcess[str]
    first_seconds: float


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, check=False, **kw)  # type: ignore[call-overload,no-any-return]


def _must(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    result = _run(cmd, **kw)
    assert result.returncode == 0, (
        f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


def _ansible_env() -> dict[str, str]:
    """A clean environment: the controller's PIP_* and APPLIANCE_* must not leak into the chroot."""
    return {
        "PATH": f"{ANSIBLE_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_LOCAL_TEMP": str(BUILD / "ansible-tmp"),
        "ANSIBLE_HOME": str(BUILD / "ansible-home"),
    }


def _playbook(
    netns: str, target_inventory: Path, vault_pass_file: Path
) -> subprocess.CompletedProcess[str]:
    """ansible-playbook inside NETNS: a namespace with no interface but a loopback that is down.

    The chroot runs in it too, so the firewall role's `nft -f` loads its rules there.
    """
    return _run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            str(ANSIBLE_BIN / "ansible-playbook"),
            "-v",
            "-i",
            str(target_inventory / "hosts.yml"),
            "--vault-password-file",
            str(vault_pass_file),
            str(ANSIBLE_DIR / "site.yml"),
        ],
        env=_ansible_env(),
        cwd=ANSIBLE_DIR,
    )


def _recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counters of the one host."""
    match = re.search(r"PLAY RECAP \*+\n\s*target\s*:(.*)", output)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def _is_mounted(path: Path) -> bool:
    return _run(["mountpoint", "-q", str(path)]).returncode == 0


def _unmount_all() -> None:
    for sub in reversed(MOUNTS):
        path = ROOTFS / sub
        if _is_mounted(path) and _run(["umount", str(path)]).returncode != 0:
            _run(["umount", "-l", str(path)])


def _remove_rootfs() -> None:
    _unmount_all()
    for sub in MOUNTS:
        assert not _is_mounted(ROOTFS / sub), f"{ROOTFS / sub} is still mounted; not deleting"
    # --one-file-system: never follow into a mount (a bind-mounted /dev above all).
    _run(["rm", "-rf", "--one-file-system", str(ROOTFS)])


def _make_rootfs(os_name: str) -> None:
    _remove_rootfs()
    cache = OS_CACHE / f"{os_name}.tar"
    _must([str(ANSIBLE_DIR / "rootfs.sh"), os_name, str(cache)], timeout=1200)
    ROOTFS.mkdir(parents=True)
    _must(["tar", "-C", str(ROOTFS), "-xf", str(cache)])
    assert not (ROOTFS / "usr/bin/python3").exists(), "a fresh server without Python"
    # No package may start a daemon inside the chroot (it would share this machine's ports).
    policy = ROOTFS / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    _must(["mount", "-t", "proc", "proc", str(ROOTFS / "proc")])
    _must(["mount", "-t", "sysfs", "-o", "ro", "sysfs", str(ROOTFS / "sys")])
    _must(["mount", "--bind", "/dev", str(ROOTFS / "dev")])
    _must(["mount", "--bind", "/dev/pts", str(ROOTFS / "dev/pts")])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _bundle() -> tuple[Path, str]:
    tars = sorted(BUNDLE_DIR.glob("appliance-bundle-*.tar"))
    assert tars, "no bundle: run `make bundle` (make ansible-test does)"
    tar = tars[-1]
    return tar, Path(f"{tar}.sha256").read_text().split()[0]


def _vault_encrypt(vault_pass_file: Path, path: Path) -> None:
    _must(
        [
            str(ANSIBLE_BIN / "ansible-vault"),
            "encrypt",
            "--vault-password-file",
            str(vault_pass_file),
            str(path),
        ],
        env=_ansible_env(),
    )


def _customer_certificate(files: Path, vault_pass_file: Path) -> tuple[Path, Path, Path, str]:
    """A CA of "the customer's" and a server certificate it signed; the key goes into the vault.

    Returns the CA certificate, the server certificate, the vaulted key and the key's text.
    """
    ca_key, ca_crt = files / "customer-ca.key", files / "customer-ca.crt"
    key, csr, crt = files / "server.key", files / "server.csr", files / "server.crt"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _must(
        ["openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca_crt)]
        + ["-subj", "/CN=Customer Test CA", "-days", "30"]
        + ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign"]
    )
    _must(["openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost"])
    ext = files / "server.ext"
    ext.write_text(
        f"subjectAltName=DNS:{SERVER_NAME},IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
    )
    _must(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key)]
        + ["-CAcreateserial", "-out", str(crt), "-days", "30", "-extfile", str(ext)]
    )
    key_text = key.read_text()
    vaulted = files / "server.key.vault"
    key.rename(vaulted)
    _vault_encrypt(vault_pass_file, vaulted)
    ca_key.unlink()
    return ca_crt, crt, vaulted, key_text


def _write_inventory(
    app_port: int, vault_pass_file: Path, customer_cert: bool
) -> tuple[Path, str, list[str], Path | None]:
    """Inventory, group_vars and vaulted secrets for this run.

    Returns the inventory, the admin password, the secrets and the customer CA (if any).
    """
    inv = WORK / "inventory"
    gv = inv / "group_vars" / "appliance"
    gv.mkdir(parents=True)
    files = inv / "files"
    files.mkdir()
    bundle, sha = _bundle()

    # The key file, made by the appliance itself, then vaulted.
    kek = files / "kek.vault"
    _must(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from appliance.core.crypto import Keyring;"
            " Keyring.generate().save(Path(sys.argv[1]))",
            str(kek),
        ]
    )
    key_values = list(json.loads(kek.read_text())["keys"].values())
    _vault_encrypt(vault_pass_file, kek)

    admin_password = "vault " + secrets.token_urlsafe(18)
    vault = gv / "vault.yml"
    vault.write_text(f"---\nvault_appliance_admin_password: {json.dumps(admin_password)}\n")
    _vault_encrypt(vault_pass_file, vault)

    (inv / "hosts.yml").write_text(
        "---\nall:\n  children:\n    appliance:\n      hosts:\n        target:\n"
        "          ansible_connection: community.general.chroot\n"
        f"          ansible_host: {ROOTFS}\n"
        "          ansible_python_interpreter: /usr/bin/python3\n"
        "          ansible_become: false\n"
    )
    settings = {
        "bundle_file": str(bundle),
        "bundle_sha256": sha,
        "appliance_key_file_src": str(kek),
        "appliance_admin_password": "{{ vault_appliance_admin_password }}",
        "appliance_port": app_port,
        "appliance_max_upload_mb": 2,
        "appliance_ocr": False,
        "appliance_service_start": False,
        "appliance_memory_high": "3G",
        "appliance_memory_max": "4G",
        "proxy_server_name": SERVER_NAME,
        "proxy_tls_extra_sans": ["IP:127.0.0.1"],
        "proxy_http_port": HTTP_PORT,
        "proxy_https_port": HTTPS_PORT,
        "proxy_listen_ipv6": False,
        "proxy_service_start": False,
        "firewall_allowed_networks": [ALLOWED_NET],
        "firewall_https_port": HTTPS_PORT,
        "firewall_apply": True,  # into the playbook's own network namespace
    }
    customer_ca = None
    if customer_cert:
        customer_ca, crt, vaulted_key, key_text = _customer_certificate(files, vault_pass_file)
        settings["proxy_tls_cert_src"] = str(crt)
        settings["proxy_tls_key_src"] = str(vaulted_key)
    (gv / "main.yml").write_text("---\n" + json.dumps(settings, indent=2) + "\n")
    # Key bytes as they appear in the key file (base64) and as raw base64 of the bytes.
    key_texts = key_values + [
        base64.b64encode(base64.urlsafe_b64decode(v + "==")).decode() for v in key_values
    ]
    secret_texts = key_texts
    if customer_cert:
        body = "".join(line for line in key_text.splitlines() if "-----" not in line)
        secret_texts = [*key_texts, body[:40], body[-40:]]
    return inv, admin_password, secret_texts, customer_ca


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """Provision a fresh rootfs of each OS once; clean up whatever happens."""
    os_name: str = request.param
    # Ubuntu's run brings the customer's certificate; Debian's makes an internal CA.
    customer_cert = os_name == "ubuntu-24.04"
    netns = f"appl-play-{os.getpid() % 100000}"
    if os.geteuid() != 0:
        pytest.fail("the Ansible test needs root (debootstrap, chroot, mounts, namespaces)")
    for port in (HTTP_PORT, HTTPS_PORT):
        assert not _port_taken(port), f"port {port} is in use on this machine"
    BUILD.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    _run(["ip", "netns", "del", netns])
    _must(["ip", "netns", "add", netns])
    try:
        _make_rootfs(os_name)
        vault_pass_file = WORK / "vault-pass"
        vault_pass = secrets.token_urlsafe(24)
        vault_pass_file.write_text(vault_pass + "\n")
        vault_pass_file.chmod(0o600)
        app_port = _free_port()
        inventory, admin_password, key_texts, customer_ca = _write_inventory(
            app_port, vault_pass_file, customer_cert
        )
        started = time.monotonic()
        first = _playbook(netns, inventory, vault_pass_file)
        seconds = time.monotonic() - started
        (BUILD / f"first-run-{os_name}.log").write_text(first.stdout + first.stderr)
        yield Target(
            os=os_name,
            rootfs=ROOTFS,
            netns=netns,
            ca_file=customer_ca or ROOTFS / "etc/appliance-ca/ca.crt",
            customer_cert=customer_cert,
            inventory=inventory,
            vault_pass_file=vault_pass_file,
            admin_password=admin_password,
            secrets=[vault_pass, admin_password, *key_texts],
            app_port=app_port,
            first_run=first,
            first_seconds=seconds,
        )
    finally:
        _remove_rootfs()
        _run(["ip", "netns", "del", netns])
        shutil.rmtree(WORK, ignore_errors=True)  # the throwaway vault password goes too


def test_first_run_provisions(target: Target) -> None:
    out = target.first_run.stdout + target.first_run.stderr
    assert target.first_run.returncode == 0, out[-6000:]
    recap = _recap(out)
    assert recap["failed"] == 0
    assert recap["unreachable"] == 0
    print(f"{target.os}: first run: {target.first_seconds:.0f} s, {recap}")


def test_no_secret_in_ansible_output(target: Target) -> None:
    out = target.first_run.stdout + target.first_run.stderr
    for value in target.secrets:
        assert value not in out


def test_layout_and_permissions(target: Target) -> None:
    root = target.rootfs
    for path, mode in (
        ("etc/appliance/kek", 0o600),
        ("etc/appliance", 0o700),
        ("var/lib/appliance", 0o700),
        ("var/lib/appliance-keys", 0o700),
        ("etc/appliance/appliance.toml", 0o640),
    ):
        assert (root / path).stat().st_mode & 0o777 == mode, path
    assert not (root / "opt/appliance/state/admin-password").exists()
    config = (root / "etc/appliance/appliance.toml").read_text()
    assert f"port = {target.app_port}" in config
    assert "max_upload_mb = 2" in config
    assert 'trusted_proxies = ["127.0.0.1", "::1"]' in config  # nginx, on loopback
    nginx = (root / "etc/nginx/nginx.conf").read_text()
    assert "proxy_buffering off;" in nginx
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in nginx
    assert "client_max_body_size 3m;" in nginx


def test_os_packages_and_python_came_from_the_bundle(target: Target) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    policy = _must(
        ["chroot", str(target.rootfs), "apt-cache", "policy", "nginx", "nftables", "python3-apt"],
        env=env,
    ).stdout
    # Each installed version is the bundle's (the distribution's mirror was unreachable).
    assert policy.count("file:/opt/appliance/releases/appliance-bundle-") >= 3, policy
    assert "Installed: (none)" not in policy, policy
    version = _must(
        ["chroot", str(target.rootfs), "/opt/appliance/current/venv/bin/python", "-V"], env=env
    ).stdout
    assert version.startswith("Python 3.11."), version
    bundled = (target.rootfs / "opt/appliance/python3.11/bin/python3.11").exists()
    assert bundled == (target.os == "ubuntu-24.04")


def test_systemd_unit_is_hardened_and_valid(target: Target) -> None:
    unit = (target.rootfs / "etc/systemd/system/appliance.service").read_text()
    for line in (
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/appliance /var/lib/appliance-keys",
        "NoNewPrivileges=true",
        "PrivateTmp=true",
        "ProtectHome=true",
        "CapabilityBoundingSet=\n",
        "MemoryMax=4G",
    ):
        assert line in unit
    wants = target.rootfs / "etc/systemd/system/multi-user.target.wants"
    state = _run(
        ["chroot", str(target.rootfs), "systemctl", "is-enabled", "appliance.service"],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )
    assert state.stdout.strip() == "enabled", (state, sorted(p.name for p in wants.iterdir()))
    result = _run(
        ["chroot", str(target.rootfs), "systemd-analyze", "verify", "appliance.service"],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def running(target: Target) -> Iterator[Target]:
    """The appliance (as its user, as the unit would) and nginx, started inside the chroot."""
    assert target.first_run.returncode == 0, "provisioning failed"
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    log = (BUILD / "appliance.log").open("w")
    app = subprocess.Popen(
        [
            "chroot",
            str(target.rootfs),
            "runuser",
            "-u",
            "appliance",
            "--",
            "env",
            "APPLIANCE_CONFIG=/etc/appliance/appliance.toml",
            "HF_HUB_OFFLINE=1",
            "TRANSFORMERS_OFFLINE=1",
            "/opt/appliance/current/venv/bin/appliance",
            "serve",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    nginx_started = False
    try:
        _must(["chroot", str(target.rootfs), "nginx"], env=env)
        nginx_started = True
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert app.poll() is None, (BUILD / "appliance.log").read_text()[-4000:]
            try:
                r = httpx.get(f"http://127.0.0.1:{target.app_port}/healthz", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        else:
            pytest.fail("the appliance did not answer /healthz within 240 s")
        yield target
    finally:
        if nginx_started:
            _run(["chroot", str(target.rootfs), "nginx", "-s", "quit"], env=env)
        os.killpg(app.pid, 15)
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, 9)
            app.wait()
        log.close()
        for _ in range(50):  # nginx workers leave after "quit"
            if not (target.rootfs / "run/nginx.pid").exists():
                break
            time.sleep(0.2)


def _tls_client(target: Target, **kw: object) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(target.ca_file))
    return httpx.Client(
        base_url=f"https://{SERVER_NAME}:{HTTPS_PORT}",
        verify=context,
        timeout=30,
        **kw,  # type: ignore[arg-type]
    )


def test_healthz_through_nginx_over_tls(running: Target) -> None:
    with _tls_client(running) as client:
        r = client.get("/healthz")
        assert r.status_code == 200, r.text
        assert r.headers.get_list("strict-transport-security") == [
            "max-age=31536000; includeSubDomains"
        ]
        stream = client.stream("GET", "/healthz")
        with stream as resp:
            assert resp.extensions["network_stream"].get_extra_info("ssl_object").version() in (
                "TLSv1.2",
                "TLSv1.3",
            )


def test_tls_below_1_2_is_refused(running: Target) -> None:
    context = ssl.create_default_context(cafile=str(running.ca_file))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    with httpx.Client(verify=context, timeout=10) as client:
        assert client.get(f"https://{SERVER_NAME}:{HTTPS_PORT}/healthz").status_code == 200
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # the point is to offer what is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with contextlib.suppress(ssl.SSLError):
        old.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(httpx.TransportError), httpx.Client(verify=old, timeout=10) as client:
        client.get(f"https://{SERVER_NAME}:{HTTPS_PORT}/healthz")


def test_http_redirects_to_https(running: Target) -> None:
    r = httpx.get(f"http://{SERVER_NAME}:{HTTP_PORT}/healthz?x=1", timeout=10)
    assert r.status_code == 301
    assert r.headers["location"] == f"https://{SERVER_NAME}:{HTTPS_PORT}/healthz?x=1"


def test_upload_limit_matches_the_appliance_setting(running: Target) -> None:
    with _tls_client(running) as client:
        r = client.post("/api/documents", content=b"x" * (4 * 1024 * 1024))
        assert r.status_code == 413


def test_first_admin_signs_in_with_the_vaulted_password(running: Target) -> None:
    origin = f"https://{SERVER_NAME}:{HTTPS_PORT}"
    with _tls_client(running) as client:
        csrf = client.get("/api/auth/csrf").json()["csrf_token"]
        headers = {"Origin": origin, "X-CSRF-Token": csrf}
        r = client.post(
            "/api/auth/login",
            json={"username": "admin", "password": "wrong password 1"},
            headers=headers,
        )
        assert r.status_code == 401
        r = client.post(
            "/api/auth/login",
            json={"username": "admin", "password": running.admin_password},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["stage"] == "enrol"
        secret = body["enrolment"]["secret"]
        headers["X-CSRF-Token"] = body["csrf_token"]
        r = client.post(
            "/api/auth/enrol/confirm",
            json={"code": totp.code_at(secret, time.time())},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["stage"] == "password"  # the vaulted password must be replaced
        headers["X-CSRF-Token"] = body["csrf_token"]
        r = client.post(
            "/api/auth/password",
            json={
                "old": running.admin_password,
                "new": "a brand new passphrase " + secrets.token_hex(4),
            },
            headers=headers,
        )
        assert r.status_code == 200, r.text
        assert r.json()["stage"] == "done"
        me = client.get("/api/auth/me")
        assert me.status_code == 200, me.text
        assert me.json()["user"]["username"] == "admin"


PROBE = """
import json, socket, sys
results = {}
for name, src, dst, port in json.loads(sys.argv[1]):
    s = socket.socket()
    s.settimeout(1.5)
    s.bind((src, 0))
    try:
        s.connect((dst, port))
        results[name] = "open"
    except OSError:
        results[name] = "blocked"
    finally:
        s.close()
print(json.dumps(results))
"""

LISTEN = """
import socket, sys, time
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(8)
    socks.append(s)
print("ready", flush=True)
time.sleep(60)
"""


def test_firewall_in_a_throwaway_network_namespace(target: Target) -> None:
    """Load the rendered ruleset into a namespace of our own, never this machine's."""
    assert shutil.which("nft"), "nft is needed (apt-get install nftables)"
    tag = f"{os.getpid() % 100000}"
    srv, cli = f"appl-fw-srv-{tag}", f"appl-fw-cli-{tag}"
    listener: subprocess.Popen[str] | None = None
    try:
        _must(["ip", "netns", "add", srv])
        _must(["ip", "netns", "add", cli])
        _must(
            [
                "ip",
                "link",
                "add",
                f"vs{tag}",
                "netns",
                srv,
                "type",
                "veth",
                "peer",
                "name",
                f"vc{tag}",
                "netns",
                cli,
            ]
        )
        for ns, dev, addrs in (
            (srv, f"vs{tag}", ["198.51.100.1/24", "203.0.113.1/24"]),
            (cli, f"vc{tag}", ["198.51.100.2/24", "203.0.113.2/24"]),
        ):
            for addr in addrs:
                _must(["ip", "-n", ns, "addr", "add", addr, "dev", dev])
            _must(["ip", "-n", ns, "link", "set", dev, "up"])
            _must(["ip", "-n", ns, "link", "set", "lo", "up"])
        _must(["ip", "netns", "exec", srv, "nft", "-f", str(target.rootfs / "etc/nftables.conf")])
        ruleset = _must(["ip", "netns", "exec", srv, "nft", "list", "ruleset"]).stdout
        assert "policy drop" in ruleset
        listener = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                srv,
                sys.executable,
                "-c",
                LISTEN,
                str(HTTPS_PORT),
                "22",
                "8000",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "ready"
        probes = [
            ("https_allowed", "198.51.100.2", "198.51.100.1", HTTPS_PORT),
            ("ssh_allowed", "198.51.100.2", "198.51.100.1", 22),
            ("other_port", "198.51.100.2", "198.51.100.1", 8000),
            ("https_other_net", "203.0.113.2", "203.0.113.1", HTTPS_PORT),
            ("ssh_other_net", "203.0.113.2", "203.0.113.1", 22),
        ]
        result = _must(
            ["ip", "netns", "exec", cli, sys.executable, "-c", PROBE, json.dumps(probes)]
        )
        assert json.loads(result.stdout) == {
            "https_allowed": "open",
            "ssh_allowed": "open",
            "other_port": "blocked",
            "https_other_net": "blocked",
            "ssh_other_net": "blocked",
        }
    finally:
        if listener is not None:
            listener.kill()
            listener.communicate()
        _run(["ip", "netns", "del", srv])
        _run(["ip", "netns", "del", cli])


def test_firewall_rules_were_loaded(target: Target) -> None:
    """firewall_apply: the rules are live in the namespace the playbook ran in."""
    ruleset = _must(["ip", "netns", "exec", target.netns, "nft", "list", "ruleset"]).stdout
    assert "table inet appliance" in ruleset
    assert "policy drop" in ruleset
    assert f"tcp dport {HTTPS_PORT}" in ruleset


def test_certificate_in_use(running: Target) -> None:
    """Ubuntu's run serves the customer's certificate (no internal CA); Debian's a generated one."""
    internal_ca = running.rootfs / "etc/appliance-ca"
    assert internal_ca.exists() != running.customer_cert
    pem = ssl.get_server_certificate(("127.0.0.1", HTTPS_PORT))
    served = ssl.PEM_cert_to_DER_cert(pem)
    installed = ssl.PEM_cert_to_DER_cert((running.rootfs / "etc/nginx/tls/server.crt").read_text())
    assert served == installed
    key = running.rootfs / "etc/nginx/tls/server.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert "ANSIBLE_VAULT" not in key.read_text()


def test_second_run_changes_nothing(target: Target) -> None:
    assert target.first_run.returncode == 0, "provisioning failed"
    started = time.monotonic()
    second = _playbook(target.netns, target.inventory, target.vault_pass_file)
    out = second.stdout + second.stderr
    (BUILD / f"second-run-{target.os}.log").write_text(out)
    assert second.returncode == 0, out[-6000:]
    recap = _recap(out)
    print(f"{target.os}: second run: {time.monotonic() - started:.0f} s, {recap}")
    assert recap["changed"] == 0, [line for line in out.splitlines() if line.startswith("changed:")]
    for value in target.secrets:
        assert value not in out


def _rename_bundle(bundle: Path, dest_dir: Path, new_name: str) -> tuple[Path, str]:
    """The same bundle under another release name (members re-prefixed), and its sha256."""
    old_name = bundle.name.removesuffix(".tar")
    out = dest_dir / f"{new_name}.tar"
    with tarfile.open(bundle) as src, tarfile.open(out, "w") as dst:
        for member in src:
            member.name = new_name + member.name.removeprefix(old_name)
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    digest = hashlib.sha256()
    with out.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return out, digest.hexdigest()


def test_upgrade_to_a_new_bundle_keeps_the_data(target: Target) -> None:
    """Operator's guide, "Upgrade": a new bundle installs beside the old release, `current`
    switches, the database is migrated, the data stays; a further run changes nothing."""
    assert target.first_run.returncode == 0, "provisioning failed"
    bundle, _ = _bundle()
    version = bundle.name.split("-")[2]
    new_name = f"appliance-bundle-{version}-upgrade{secrets.token_hex(3)}"
    new_bundle, new_sha = _rename_bundle(bundle, WORK, new_name)
    settings_file = target.inventory / "group_vars" / "appliance" / "main.yml"
    settings = json.loads(settings_file.read_text().removeprefix("---\n"))
    settings.update(bundle_file=str(new_bundle), bundle_sha256=new_sha)
    settings_file.write_text("---\n" + json.dumps(settings, indent=2) + "\n")

    run = _playbook(target.netns, target.inventory, target.vault_pass_file)
    out = run.stdout + run.stderr
    (BUILD / f"upgrade-run-{target.os}.log").write_text(out)
    assert run.returncode == 0, out[-6000:]
    assert "Migrate the database after an upgrade" in out
    root = target.rootfs
    releases = root / "opt/appliance/releases"
    assert os.readlink(root / "opt/appliance/current") == f"/opt/appliance/releases/{new_name}"
    assert (releases / bundle.name.removesuffix(".tar") / "venv/.installed").exists()  # rollback
    assert new_name in (root / "etc/apt/sources.list.d/appliance-bundle.list").read_text()
    for value in target.secrets:
        assert value not in out

    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    cli = ["chroot", str(root), "runuser", "-u", "appliance", "--", "env"]
    cli += ["APPLIANCE_CONFIG=/etc/appliance/appliance.toml", "HF_HUB_OFFLINE=1"]
    cli += ["/opt/appliance/current/venv/bin/appliance"]
    users = _must([*cli, "users", "list"], env=env).stdout
    assert "admin" in users
    verify = _run([*cli, "audit", "verify"], env=env)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    again = _playbook(target.netns, target.inventory, target.vault_pass_file)
    assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
    assert _recap(again.stdout + again.stderr)["changed"] == 0
