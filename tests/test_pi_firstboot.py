"""The pi_firstboot role: a fresh SD card's first-boot configuration, written onto a boot partition (here a temporary
directory holding its files), whole or not at all; and the registration script the card installs on the Pi, run
against a small local HTTP server.

The rendered user-data is checked with `cloud-init schema`: these tests need the `cloud-init` command on the machine
(Debian package cloud-init, which scripts/testbed-setup installs) and fail without it."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from conftest import ROOT, QuietHandler, load_module, serving

ROLE = ROOT / "roles/pi_firstboot"
SCRIPT = ROLE / "files/pi-fleet-register"
card_mod: ModuleType = load_module(ROOT / "plugins/modules/pi_firstboot_card.py")
BIN = Path(sys.executable).parent

ARGS = " systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot systemd.unit=kernel-command-line.target"
CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=6c586e13-02 rootfstype=ext4 fsck.repair=yes rootwait "
           "quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n")
# A Wi-Fi network and passphrase a shell or YAML would trip over: quotes, a backslash, a $, spaces.
SSID = 'Office "5G" $net'
PASSWORD = 'p"a\'ss \\ $HOME `x`'
TOKEN = "reg-token-0123456789-abcdef"
HASH = "$6$pifleet1$g0GaYA7kEWelOT6qHfMkqZ2pk/q9zLQv9u8fyZR8xjrhI4r4m8euaBhWeJZnObZXOrTe7hq2P25WnWKJR0cJm0"
OTHER_HASH = "$6$pifleet2$qGN7guad3X2aocmdVaXzgt8JVuVIUQbD9Ho8.BjIcVReiNXki7oPIC58ao4VXtlsL0Ec1y9lkjo7smg26j9dT/"


def ssh_key(comment: str, seed: int = 1, kind: str = "ssh-ed25519") -> str:
    """An OpenSSH public key line: its body is the length-prefixed type and 32 key bytes, as ssh-keygen writes."""
    blob = struct.pack(">I", len(kind)) + kind.encode() + struct.pack(">I", 32) + bytes([seed]) * 32
    return f"{kind} {base64.b64encode(blob).decode()} {comment}"


KEYS = [ssh_key("admin@laptop"), ssh_key("backup@vault", seed=2)]


def psk(password: str = PASSWORD, ssid: str = SSID) -> str:
    return hashlib.pbkdf2_hmac("sha1", password.encode(), ssid.encode(), 4096, 32).hex()


@pytest.fixture
def cloud_init() -> str:
    found = shutil.which("cloud-init")
    if not found:
        pytest.fail("the cloud-init command is missing: these tests check the rendered user-data with `cloud-init "
                    "schema`; scripts/testbed-setup installs it (Debian package cloud-init)")
    return found


def boot_partition(tmp: Path, cloud_init_files: bool = False) -> Path:
    """A boot partition's files as a fresh image has them (trixie's with its stock cloud-init files)."""
    boot = tmp / "bootfs"
    (boot / "overlays").mkdir(parents=True)
    (boot / "cmdline.txt").write_text(CMDLINE)
    (boot / "config.txt").write_text("[all]\narm_64bit=1\ndtparam=audio=on\n")
    (boot / "overlays/README").write_text("overlays\n")
    (boot / "start4.elf").write_bytes(bytes(range(256)))
    if cloud_init_files:
        (boot / "user-data").write_text("#cloud-config\n# the image's own: Raspberry Pi Imager replaces it\n")
        (boot / "meta-data").write_text("instance-id: rpios-image\n")
    return boot


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every name under the directory (hidden ones too) and its content."""
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(directory.rglob("*"))}


def params(boot: Path, **overrides: Any) -> dict[str, Any]:
    """A full card: Wi-Fi (hidden), a password hash, the registration."""
    return {"boot_dir": str(boot), "hostname": "kiosk-lobby-01", "user": "pi", "ssh_keys": KEYS, "password_hash": HASH,
            "wifi_ssid": SSID, "wifi_password": PASSWORD, "wifi_country": "GB", "wifi_hidden": True,
            "timezone": "Europe/London", "register_url": "https://attendance.example.org/", "register_token": TOKEN,
            "register_script": str(SCRIPT), **overrides}


def run_module(tmp: Path, args: dict[str, Any], check: bool = False, diff: bool = True,
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """The module as Ansible runs it: its arguments as JSON, its result on stdout."""
    argfile = tmp / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check,
                                                           "_ansible_diff": diff}}))
    done = subprocess.run([sys.executable, str(ROOT / "plugins/modules/pi_firstboot_card.py"), str(argfile)],
                          capture_output=True, text=True, check=False, env=env)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def heredoc(script: str, path: str) -> str:
    """What a `cat >path <<'PI_FLEET_EOF'` of firstrun.sh writes."""
    found = re.search(rf"^cat >{re.escape(path)} <<'PI_FLEET_EOF'\n(.*?)\nPI_FLEET_EOF$", script, re.S | re.M)
    assert found, f"firstrun.sh writes no {path}"
    return found.group(1) + "\n"


# -- cloud-init (Raspberry Pi OS from trixie on) -----------------------------------------------------------------
def test_a_trixie_card_gets_cloud_init_files_that_cloud_init_accepts(tmp_path: Path, cloud_init: str) -> None:
    boot = boot_partition(tmp_path, cloud_init_files=True)
    before = snapshot(boot)
    result = run_module(tmp_path, params(boot))
    assert not result.get("failed"), result
    assert result["changed"] and result["method"] == "cloud-init" and result["registration"] is True
    assert result["files"] == ["network-config", "user-data", "meta-data"]
    assert "user-data: cloud-init schema" in result["validated"] and not result.get("warnings"), result
    # The rest of the partition is as it was: cmdline.txt is not touched with cloud-init.
    after = snapshot(boot)
    assert {k: v for k, v in after.items() if k not in result["files"]} == {
        k: v for k, v in before.items() if k not in result["files"]}

    text = (boot / "user-data").read_text()
    assert text.startswith("#cloud-config\n")
    schema = subprocess.run([cloud_init, "schema", "--config-file", str(boot / "user-data")],
                            capture_output=True, text=True, check=False)
    assert schema.returncode == 0, schema.stderr
    config = yaml.safe_load(text)
    assert config["hostname"] == "kiosk-lobby-01" and config["timezone"] == "Europe/London"
    assert config["ssh_pwauth"] is False and config["enable_ssh"] is True
    (user,) = config["users"]
    assert user["name"] == "pi" and user["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert {"sudo", "video"} <= set(user["groups"])
    assert user["ssh_authorized_keys"] == KEYS
    assert user["hashed_passwd"] == HASH and user["lock_passwd"] is False
    files = {f["path"]: f for f in config["write_files"]}
    assert files["/usr/local/sbin/pi-fleet-register"]["content"] == SCRIPT.read_text()
    assert files["/usr/local/sbin/pi-fleet-register"]["permissions"] == "0755"
    assert json.loads(files["/etc/pi-fleet/register.json"]["content"]) == {
        "url": "https://attendance.example.org", "token": TOKEN}
    assert files["/etc/pi-fleet/register.json"]["permissions"] == "0600"
    assert files["/etc/pi-fleet/register.json"]["owner"] == "root:root"
    unit = files["/etc/systemd/system/pi-fleet-register.service"]["content"]
    for line in ("Type=oneshot", "After=network-online.target", "Wants=network-online.target",
                 "ConditionPathExists=!/var/lib/pi-fleet/registered", "Restart=on-failure", "RestartSec=60",
                 "RestartPreventExitStatus=3", "WantedBy=multi-user.target"):
        assert line in unit.splitlines()
    assert ["systemctl", "enable", "pi-fleet-register.service"] in config["runcmd"]

    # The Wi-Fi passphrase comes back exactly from the YAML (quotes, backslash, $, spaces).
    network = yaml.safe_load((boot / "network-config").read_text())["network"]
    assert network["version"] == 2
    wlan = network["wifis"]["wlan0"]
    assert wlan["dhcp4"] is True and wlan["regulatory-domain"] == "GB"
    assert wlan["access-points"] == {SSID: {"password": PASSWORD, "hidden": True}}

    meta = yaml.safe_load((boot / "meta-data").read_text())
    assert meta["local-hostname"] == "kiosk-lobby-01"
    assert re.fullmatch(r"pi-fleet-kiosk-lobby-01-[0-9a-f]{12}", meta["instance-id"])
    assert meta["instance-id"] == result["instance_id"]


def test_a_rewritten_card_is_a_new_cloud_init_instance(tmp_path: Path, cloud_init: str) -> None:
    boot = boot_partition(tmp_path, cloud_init_files=True)
    first = run_module(tmp_path, params(boot))["instance_id"]
    again = run_module(tmp_path, params(boot))
    assert again["changed"] is False and again["files"] == [] and again["instance_id"] == first
    other = run_module(tmp_path, params(boot, wifi_password="another passphrase"))
    assert other["changed"] and other["files"] == ["network-config", "meta-data"]
    assert other["instance_id"] != first


def test_without_wifi_or_a_password_the_password_is_locked_and_ethernet_used(tmp_path: Path, cloud_init: str) -> None:
    boot = boot_partition(tmp_path, cloud_init_files=True)
    result = run_module(tmp_path, params(boot, password_hash="", wifi_ssid="", wifi_password="", wifi_country="",
                                         register_url="", register_token=""))
    assert result["changed"] and result["registration"] is False, result
    config = yaml.safe_load((boot / "user-data").read_text())
    assert config["users"][0]["lock_passwd"] is True and "hashed_passwd" not in config["users"][0]
    assert "write_files" not in config and "runcmd" not in config
    network = yaml.safe_load((boot / "network-config").read_text())["network"]
    assert "wifis" not in network and network["ethernets"]["eth0"]["dhcp4"] is True


# -- firstrun.sh (bookworm) --------------------------------------------------------------------------------------
def test_a_bookworm_card_gets_imagers_firstrun_script(tmp_path: Path) -> None:
    boot = boot_partition(tmp_path)
    result = run_module(tmp_path, params(boot))
    assert not result.get("failed"), result
    assert result["method"] == "firstrun" and result["files"] == ["firstrun.sh", "cmdline.txt"]
    assert result["validated"] == ["firstrun.sh: bash -n"] and result["instance_id"] == ""
    assert (boot / "cmdline.txt").read_text() == CMDLINE.rstrip("\n") + ARGS + "\n"
    assert not (boot / "user-data").exists() and not (boot / "meta-data").exists()
    script = (boot / "firstrun.sh").read_text()
    assert script.startswith("#!/bin/bash\n")
    syntax = subprocess.run(["bash", "-n", str(boot / "firstrun.sh")], capture_output=True, text=True, check=False)
    assert syntax.returncode == 0, syntax.stderr

    # Every value reaches its command exactly, through the shell's quoting; the passphrase only as its PSK.
    (wlan,) = lines_with(script, "imager_custom set_wlan")
    assert shlex.split(wlan) == ["/usr/lib/raspberrypi-sys-mods/imager_custom", "set_wlan", "-h", SSID, psk(), "GB"]
    assert PASSWORD not in script and shlex.quote(PASSWORD) not in script
    assert f"\tpsk={psk()}" in script.splitlines() and f"\tssid={SSID.encode().hex()}" in script.splitlines()
    (ssh,) = lines_with(script, "imager_custom enable_ssh")
    assert shlex.split(ssh) == ["/usr/lib/raspberrypi-sys-mods/imager_custom", "enable_ssh", "-k", *KEYS]
    (userconf,) = lines_with(script, "/usr/lib/userconf-pi/userconf pi")
    assert shlex.split(userconf) == ["/usr/lib/userconf-pi/userconf", "pi", HASH]
    (hostname,) = lines_with(script, "imager_custom set_hostname")
    assert shlex.split(hostname)[1:] == ["set_hostname", "kiosk-lobby-01"]
    (timezone,) = lines_with(script, "imager_custom set_timezone")
    assert shlex.split(timezone)[1:] == ["set_timezone", "Europe/London"]
    assert "passwd -l pi" not in script  # a password hash is given

    # The registration: the script, its settings and its unit, written by quoted here-documents, and enabled.
    assert heredoc(script, "/usr/local/sbin/pi-fleet-register") == SCRIPT.read_text()
    assert json.loads(heredoc(script, "/etc/pi-fleet/register.json")) == {
        "url": "https://attendance.example.org", "token": TOKEN}
    assert "RestartPreventExitStatus=3" in heredoc(script, "/etc/systemd/system/pi-fleet-register.service")
    assert "systemctl enable pi-fleet-register.service" in script.splitlines()

    # It ends as Imager's does: it removes itself and its cmdline.txt arguments. Bookworm's initramfs cuts the script
    # at its first `rm ... firstrun.sh` line and appends its own end: that line must be the end.
    assert script.splitlines()[-3:] == ["rm -f /boot/firstrun.sh", "sed -i 's| systemd.run.*||g' /boot/cmdline.txt",
                                        "exit 0"]
    assert [line for line in script.splitlines() if re.search(r"rm.*firstrun\.sh$", line)] == [
        "rm -f /boot/firstrun.sh"]


def test_firstrun_without_a_password_locks_it(tmp_path: Path) -> None:
    boot = boot_partition(tmp_path)
    assert run_module(tmp_path, params(boot, password_hash="", wifi_ssid="", wifi_password="", wifi_country="",
                                       user="kiosk"))["changed"]
    script = (boot / "firstrun.sh").read_text()
    assert "passwd -l kiosk" in script.splitlines() and "set_wlan" not in script
    assert shlex.split(lines_with(script, "userconf kiosk")[0]) == ["/usr/lib/userconf-pi/userconf", "kiosk", ""]


@pytest.mark.parametrize(("present", "method"), [
    ([], "firstrun"), (["user-data"], "cloud-init"), (["meta-data"], "cloud-init"),
    (["user-data", "meta-data"], "cloud-init")])
def test_auto_picks_cloud_init_when_the_image_ships_its_files(tmp_path: Path, present: list[str], method: str,
                                                              cloud_init: str) -> None:
    boot = boot_partition(tmp_path)
    for name in present:
        (boot / name).write_text("#cloud-config\n" if name == "user-data" else "instance-id: image\n")
    result = run_module(tmp_path, params(boot), check=True)
    assert result["method"] == method, result


@pytest.mark.parametrize("cloud_init_files", [False, True], ids=["firstrun", "cloud-init"])
def test_a_rerun_changes_nothing_and_cmdline_is_armed_once(tmp_path: Path, cloud_init_files: bool,
                                                           cloud_init: str) -> None:
    boot = boot_partition(tmp_path, cloud_init_files)
    assert run_module(tmp_path, params(boot))["changed"]
    written = snapshot(boot)
    again = run_module(tmp_path, params(boot))
    assert again["changed"] is False and again["files"] == [] and again["diff"] == []
    assert snapshot(boot) == written
    cmdline = (boot / "cmdline.txt").read_text()
    assert cmdline.count("systemd.run=") == (0 if cloud_init_files else 1)
    assert cmdline.count("\n") == 1


def test_a_card_armed_by_another_script_is_refused(tmp_path: Path) -> None:
    boot = boot_partition(tmp_path)
    (boot / "cmdline.txt").write_text(CMDLINE.rstrip("\n") + " systemd.run=/boot/other.sh\n")
    before = snapshot(boot)
    result = run_module(tmp_path, params(boot))
    assert result["failed"] and "already runs another first-boot script (systemd.run=/boot/other.sh)" in result["msg"]
    assert snapshot(boot) == before


@pytest.mark.parametrize("cloud_init_files", [False, True], ids=["firstrun", "cloud-init"])
def test_check_mode_writes_nothing_and_tells_what_would_change(tmp_path: Path, cloud_init_files: bool,
                                                               cloud_init: str) -> None:
    boot = boot_partition(tmp_path, cloud_init_files)
    before = snapshot(boot)
    preview = run_module(tmp_path, params(boot), check=True)
    assert preview["changed"] and snapshot(boot) == before
    assert [d["after_header"] for d in preview["diff"]] == [str(boot / f) for f in preview["files"]]
    done = run_module(tmp_path, params(boot))
    assert done["files"] == preview["files"] and done["instance_id"] == preview["instance_id"]
    assert run_module(tmp_path, params(boot), check=True)["changed"] is False


@pytest.mark.parametrize("cloud_init_files", [False, True], ids=["firstrun", "cloud-init"])
def test_the_diff_and_the_result_never_show_a_secret(tmp_path: Path, cloud_init_files: bool, cloud_init: str) -> None:
    boot = boot_partition(tmp_path, cloud_init_files)
    first = run_module(tmp_path, params(boot))
    # Written over with other secrets: neither the old ones (in the "before" side) nor the new ones show.
    second = run_module(tmp_path, params(boot, wifi_password="second $ecret pass", register_token="x" * 24 + "-new",
                                         password_hash=OTHER_HASH))
    assert second["changed"]
    secrets = [PASSWORD, psk(), TOKEN, HASH, "second $ecret pass", psk("second $ecret pass"), "x" * 24 + "-new",
               OTHER_HASH]
    for result in (first, second):
        shown = json.dumps(result)
        assert result["diff"] and "<hidden " in shown
        for secret in secrets:
            for form in {secret, json.dumps(secret)[1:-1], shlex.quote(secret), json.dumps(json.dumps(secret))}:
                assert form not in shown, f"{form!r} shows in {shown}"
    # A changed secret shows as a changed line, what it is nowhere; the rest is shown as it is.
    before = "\n".join(d["before"] for d in second["diff"])
    after = "\n".join(d["after"] for d in second["diff"])
    assert "<hidden earlier value>" in before and "<hidden earlier value>" not in after
    assert "<hidden password hash>" in after and "<hidden registration token>" in after
    assert ("<hidden Wi-Fi password>" if cloud_init_files else "<hidden Wi-Fi PSK>") in after
    assert "kiosk-lobby-01" in after and KEYS[0] in after


# -- refused inputs ----------------------------------------------------------------------------------------------
REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("bad hostname", {"hostname": "Kiosk_01"},
     "pi_firstboot_hostname='Kiosk_01' is not allowed: a lower-case RFC 1123 label"),
    ("hostname ending in a dash", {"hostname": "kiosk-"}, "pi_firstboot_hostname='kiosk-' is not allowed"),
    ("no ssh key", {"ssh_keys": []}, "pi_firstboot_ssh_keys=[] is not allowed: at least one OpenSSH public key"),
    ("a key of no known type", {"ssh_keys": [KEYS[0], "ssh-foo AAAAC3Nza me"]},
     "pi_firstboot_ssh_keys[1]='ssh-foo AAAAC3Nza me' is not allowed: an OpenSSH public key line"),
    ("a key that is not base64", {"ssh_keys": ["ssh-ed25519 AAAA!!!notbase64 me"]},
     "pi_firstboot_ssh_keys[0]='ssh-ed25519 AAAA!!!notbase64 me' is not allowed"),
    ("a key whose body is another type's", {"ssh_keys": [ssh_key("me", kind="ssh-ed25519").replace("ssh-ed25519",
                                                                                                   "ssh-rsa", 1)]},
     "(its body is not an ssh-rsa key)"),
    ("a key spanning two lines", {"ssh_keys": [KEYS[0] + "\nssh-ed25519 AAAA"]}, "pi_firstboot_ssh_keys[0]="),
    ("a key with a line break after it", {"ssh_keys": [KEYS[0] + "\n"]}, "pi_firstboot_ssh_keys[0]="),
    ("Wi-Fi password of 7 characters", {"wifi_password": "1234567"},
     "pi_firstboot_wifi_password=(hidden, 7 characters) is not allowed: 8 to 63 printable ASCII characters"),
    ("Wi-Fi password of 64 characters", {"wifi_password": "a" * 64}, "pi_firstboot_wifi_password=(hidden, 64"),
    ("SSID without a country", {"wifi_country": ""},
     "pi_firstboot_wifi_country='' is not allowed: an ISO 3166-1 alpha-2 country code"),
    ("a country that is not one", {"wifi_country": "XX"}, "pi_firstboot_wifi_country='XX' is not allowed"),
    ("SSID of 33 bytes", {"wifi_ssid": "é" * 17}, "is not allowed: 1 to 32 bytes (UTF-8)"),
    ("a Wi-Fi password without an SSID", {"wifi_ssid": "", "wifi_country": ""},
     "pi_firstboot_wifi_password=(hidden, 18 characters) is not allowed: empty while pi_firstboot_wifi_ssid is empty"),
    ("register URL without a token", {"register_token": ""},
     "pi_firstboot_register_token=(hidden, 0 characters) is not allowed: the registration token, at least 16"),
    ("a short token", {"register_token": "short"}, "pi_firstboot_register_token=(hidden, 5 characters)"),
    ("a register URL that is not http", {"register_url": "ftp://attendance.example.org"},
     "pi_firstboot_register_url='ftp://attendance.example.org' is not allowed"),
    ("a register URL with a password in it", {"register_url": "https://me:pw@attendance.example.org"},
     "pi_firstboot_register_url='https://me:pw@attendance.example.org' is not allowed"),
    ("a plain password", {"password_hash": "kiosk secret"},
     "pi_firstboot_password_hash=(hidden, 12 characters) is not allowed: empty (the password locked) or a crypt hash"),
    ("an unknown timezone", {"timezone": "Mars/Olympus_Mons"},
     "pi_firstboot_timezone='Mars/Olympus_Mons' is not allowed: a timezone of the controller's zoneinfo"),
    ("a timezone reaching out of zoneinfo", {"timezone": "../../etc/passwd"}, "pi_firstboot_timezone="),
    ("root", {"user": "root"}, "pi_firstboot_user='root' is not allowed"),
    ("a user name with a space", {"user": "pi admin"}, "pi_firstboot_user='pi admin' is not allowed"),
]


@pytest.mark.parametrize(("case", "overrides", "message"), REFUSED, ids=[r[0] for r in REFUSED])
@pytest.mark.parametrize("cloud_init_files", [False, True], ids=["firstrun", "cloud-init"])
def test_a_bad_input_is_refused_by_name_and_nothing_is_written(tmp_path: Path, case: str, overrides: dict[str, Any],
                                                                message: str, cloud_init_files: bool) -> None:
    boot = boot_partition(tmp_path, cloud_init_files)
    before = snapshot(boot)
    result = run_module(tmp_path, params(boot, **overrides))
    assert result.get("failed"), result
    assert message in result["msg"] and result["msg"].endswith("Nothing was written."), result["msg"]
    assert snapshot(boot) == before
    for secret in (PASSWORD, TOKEN, HASH, psk(), "kiosk secret"):
        assert secret not in result["msg"]


@pytest.mark.parametrize(("missing", "message"), [
    (["cmdline.txt"], "it has no cmdline.txt (is the card's boot partition mounted there?)"),
    (["config.txt"], "it has no config.txt"),
    (["cmdline.txt", "config.txt"], "it has no cmdline.txt and no config.txt")])
def test_a_directory_that_is_no_boot_partition_is_refused(tmp_path: Path, missing: list[str], message: str) -> None:
    boot = boot_partition(tmp_path)
    for name in missing:
        (boot / name).unlink()
    before = snapshot(boot)
    result = run_module(tmp_path, params(boot))
    assert result["failed"] and f"pi_firstboot_boot_dir='{boot}' is not allowed: a Raspberry Pi OS boot partition, " \
        f"which holds cmdline.txt and config.txt; {message}" in result["msg"], result["msg"]
    assert snapshot(boot) == before


def test_a_boot_dir_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    result = run_module(tmp_path, params(tmp_path / "not-mounted"))
    assert result["failed"] and f"pi_firstboot_boot_dir='{tmp_path}/not-mounted' is not allowed: a directory that " \
        "exists" in result["msg"]
    assert not (tmp_path / "not-mounted").exists()


# -- nothing half-written ----------------------------------------------------------------------------------------
def card(**overrides: Any) -> Any:
    values = {k: v for k, v in params(Path("/unused"), **overrides).items() if k not in ("boot_dir", "register_script")}
    return card_mod.Card(**{**values, "ssh_keys": tuple(values["ssh_keys"]), "register_script": SCRIPT.read_text(),
                            "register_url": values["register_url"].rstrip("/")})


@pytest.mark.parametrize(("cloud_init_files", "failing"), [
    (False, "cmdline.txt"), (False, "firstrun.sh"), (True, "meta-data"), (True, "user-data")])
def test_a_failed_rename_puts_everything_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              cloud_init_files: bool, failing: str) -> None:
    boot = boot_partition(tmp_path, cloud_init_files)
    if cloud_init_files:
        (boot / "network-config").write_text("# the image's own\n")
    before = snapshot(boot)
    method = "cloud-init" if cloud_init_files else "firstrun"
    changes = card_mod.plan(boot, card_mod.render(card(), method, CMDLINE))
    assert failing in [c.name for c in changes]
    real = os.replace
    failed: list[str] = []

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == failing and not failed:
            failed.append(str(dst))
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space left"):
        card_mod.commit(boot, changes)
    assert failed and snapshot(boot) == before  # no temporary left, every file as it was


def test_a_failed_write_of_a_temporary_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boot = boot_partition(tmp_path, cloud_init_files=True)
    before = snapshot(boot)
    changes = card_mod.plan(boot, card_mod.render(card(), "cloud-init", CMDLINE))
    real = os.fsync
    calls: list[int] = []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match="Input/output error"):
        card_mod.commit(boot, changes)
    assert snapshot(boot) == before


def test_a_render_the_checker_refuses_writes_nothing(tmp_path: Path) -> None:
    """A cloud-init that refuses the user-data (and says what it holds): nothing written, no secret in the message."""
    boot = boot_partition(tmp_path, cloud_init_files=True)
    before = snapshot(boot)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "cloud-init").write_text('#!/bin/sh\necho "Error: Cloud config schema errors: $(grep -E '
                                     '\'hashed_passwd|token\' "$3")" >&2\nexit 1\n')
    (fake / "cloud-init").chmod(0o755)
    result = run_module(tmp_path, params(boot), env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"})
    assert result["failed"] and "cloud-init schema refuses the rendered user-data" in result["msg"], result
    assert "hashed_passwd: <hidden password hash>" in result["msg"] and "<hidden registration token>" in result["msg"]
    assert HASH not in result["msg"] and TOKEN not in result["msg"]
    assert snapshot(boot) == before


def test_without_cloud_init_the_module_warns_that_it_could_not_check(tmp_path: Path) -> None:
    boot = boot_partition(tmp_path, cloud_init_files=True)
    only_bash = tmp_path / "bin"
    only_bash.mkdir()
    (only_bash / "bash").symlink_to(shutil.which("bash") or "/bin/bash")
    result = run_module(tmp_path, params(boot), env={**os.environ, "PATH": str(only_bash)})
    # (ansible-core 2.19 returns each warning as a structure holding its text)
    assert result["changed"] and "cloud-init is not installed on the controller" in json.dumps(
        result.get("warnings", [])), result
    assert "user-data: parsed (cloud-init not installed: schema not checked)" in result["validated"]


# -- the role and the playbook -----------------------------------------------------------------------------------
def test_site_yml_does_not_write_cards() -> None:
    site = yaml.safe_load((ROOT / "playbooks/site.yml").read_text())  # the root's site.yml imports it
    imported = [play["ansible.builtin.import_playbook"] for play in site]
    assert "firstboot.yml" not in imported and (ROOT / "playbooks/firstboot.yml").is_file()


def playbook(tmp: Path, extra: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    (tmp / "card.json").write_text(json.dumps(extra))
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_CALLBACKS_ENABLED"}
    return subprocess.run([str(BIN / "ansible-playbook"), "playbooks/firstboot.yml", "-e", f"@{tmp / 'card.json'}",
                           *args], capture_output=True, text=True, cwd=ROOT, env={**env, "ANSIBLE_NOCOLOR": "1"})


def test_the_playbook_writes_a_card(tmp_path: Path, cloud_init: str) -> None:
    boot = boot_partition(tmp_path, cloud_init_files=True)
    extra = {f"pi_firstboot_{k}": v for k, v in params(boot).items() if k not in ("boot_dir", "register_script")}
    done = playbook(tmp_path, extra, "-e", f"pi_firstboot_boot_dir={boot}", "--diff")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"localhost\s+: ok=3\s+changed=1\s+unreachable=0\s+failed=0", done.stdout), done.stdout
    words = " ".join(done.stdout.split())  # the YAML callback folds long lines
    assert "wrote network-config, user-data, meta-data" in words and "Checked: user-data: cloud-init schema" in words
    for secret in (PASSWORD, TOKEN, HASH, psk()):
        assert secret not in done.stdout + done.stderr
    config = yaml.safe_load((boot / "user-data").read_text())
    assert config["users"][0]["ssh_authorized_keys"] == KEYS
    network = yaml.safe_load((boot / "network-config").read_text())["network"]
    assert network["wifis"]["wlan0"]["access-points"][SSID]["password"] == PASSWORD


def test_the_playbook_refuses_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    boot = boot_partition(tmp_path)
    before = snapshot(boot)
    extra = {f"pi_firstboot_{k}": v for k, v in params(
        boot, hostname="Kiosk_01", wifi_password="1234567").items() if k != "register_script"}
    done = playbook(tmp_path, extra)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "pi_firstboot_hostname='Kiosk_01' is not allowed: a lower-case RFC 1123 label" in out, out
    assert "pi_firstboot_wifi_password=(hidden, 7 characters) is not allowed" in out and "1234567" not in out
    assert snapshot(boot) == before


# -- the registration script, on the Pi ---------------------------------------------------------------------------
class Server:
    """A tiny attendance server: answers POST /api/register with the status set, records what it was sent."""

    def __init__(self) -> None:
        self.status = 201
        self.answer: dict[str, Any] = {"hostname": "kiosk-lobby-01", "registered": True}
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
                self.reply(server.status, json.dumps(server.answer).encode())

        self.handler = Handler
        self.url = ""


@pytest.fixture
def server() -> Iterator[Server]:
    served = Server()
    with serving(served.handler) as served.url:
        yield served


class Pi:
    """A Pi's files as the script reads them, moved by its environment variables."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp = tmp
        self.devicetree = tmp / "devicetree"
        self.devicetree.mkdir()
        (self.devicetree / "serial-number").write_bytes(b"00000000C0FFEE42\0")
        (self.devicetree / "model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\0")
        self.cpuinfo = tmp / "cpuinfo"
        self.cpuinfo.write_text("processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nRevision\t: d03115\n"
                                "Serial\t\t: 10000000deadbeef\nModel\t\t: Raspberry Pi 4 Model B Rev 1.5\n")
        self.host_key = tmp / "ssh_host_ed25519_key.pub"
        self.host_key.write_text(KEYS[0].replace("admin@laptop", "root@kiosk-lobby-01") + "\n")
        self.config = tmp / "register.json"
        self.config.write_text(json.dumps({"url": url, "token": TOKEN}) + "\n")
        self.registered = tmp / "var/lib/pi-fleet/registered"

    def register(self) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PI_FLEET_REGISTER_CONFIG": str(self.config), "PI_FLEET_REGISTERED": str(self.registered),
               "PI_FLEET_DEVICETREE": str(self.devicetree), "PI_FLEET_CPUINFO": str(self.cpuinfo),
               "PI_FLEET_HOST_KEY": str(self.host_key)}
        return subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120,
                              check=False)


@pytest.mark.parametrize("status", [201, 200])
def test_the_pi_registers_once_with_what_ansible_needs(tmp_path: Path, server: Server, status: int) -> None:
    server.status = status
    pi = Pi(tmp_path, server.url + "/")
    done = pi.register()
    assert done.returncode == 0, done.stderr
    (request,) = server.requests
    assert request["path"] == "/api/register"
    assert request["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {
        "serial": "00000000c0ffee42",  # the device tree's, leading zeros kept, lower case
        "hostname": socket.gethostname(), "model": "Raspberry Pi 4 Model B Rev 1.5", "revision": "d03115",
        "address": "127.0.0.1",  # the address this Pi reaches the server from
        "host_key": KEYS[0].replace("admin@laptop", "root@kiosk-lobby-01")}
    assert json.loads(pi.registered.read_text()) == server.answer
    assert "registered" in done.stdout
    assert not pi.config.exists()  # the token leaves the Pi once used


def test_without_a_device_tree_the_serial_comes_from_cpuinfo(tmp_path: Path, server: Server) -> None:
    pi = Pi(tmp_path, server.url + "/attendance")
    shutil.rmtree(pi.devicetree)
    pi.host_key.unlink()
    assert pi.register().returncode == 0
    (request,) = server.requests
    assert request["path"] == "/attendance/api/register"
    assert request["body"]["serial"] == "10000000deadbeef" and request["body"]["revision"] == "d03115"
    assert request["body"]["model"] == "Raspberry Pi 4 Model B Rev 1.5" and "host_key" not in request["body"]


def test_a_duplicate_needs_a_person_and_is_not_retried(tmp_path: Path, server: Server) -> None:
    server.status = 409
    server.answer = {"detail": "hostname kiosk-lobby-01 is registered to serial 10000000aaaaaaaa"}
    pi = Pi(tmp_path, server.url)
    done = pi.register()
    assert done.returncode == 3  # pi-fleet-register.service's RestartPreventExitStatus
    assert "hostname kiosk-lobby-01 is registered to serial 10000000aaaaaaaa" in done.stderr
    assert not pi.registered.exists() and len(server.requests) == 1
    assert pi.config.exists()  # kept: once a person resolved it, `systemctl start pi-fleet-register` tries again


def test_a_server_error_is_one_line_and_retried(tmp_path: Path, server: Server) -> None:
    server.status = 500
    server.answer = {"detail": "database unavailable"}
    pi = Pi(tmp_path, server.url)
    done = pi.register()
    assert done.returncode == 1 and not pi.registered.exists()
    assert done.stderr.count("\n") == 1 and "HTTP 500" in done.stderr and "database unavailable" in done.stderr


def test_no_server_is_one_line_and_retried(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    pi = Pi(tmp_path, f"http://127.0.0.1:{port}")
    done = pi.register()
    assert done.returncode == 1 and not pi.registered.exists()
    assert done.stderr.count("\n") == 1 and "trying again later" in done.stderr
