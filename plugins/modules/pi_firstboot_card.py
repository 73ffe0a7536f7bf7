#!/usr/bin/python
"""Ansible module: a fresh Raspberry Pi OS SD card's first-boot configuration, written onto its boot partition whole
or not at all.

It runs on the controller, where the card is mounted (or on any directory holding a boot partition's files)."""
from __future__ import annotations

DOCUMENTATION = r"""
module: pi_firstboot_card
short_description: Write a Raspberry Pi OS boot partition's first-boot configuration (cloud-init or firstrun.sh)
author: pi-fleet maintainers
description:
  - Renders the first-boot configuration of a fresh Raspberry Pi OS card (hostname, user and SSH keys, Wi-Fi,
    timezone, and optionally the registration with the attendance server), checks it, then writes it onto the
    boot partition O(boot_dir).
  - V(cloud-init) (Raspberry Pi OS from trixie, whose images ship C(user-data) and C(meta-data)) writes
    C(user-data), C(network-config) and C(meta-data), whose instance-id changes with the content, so a rewritten
    card is a new instance. V(firstrun) (bookworm images) writes C(firstrun.sh) as Raspberry Pi Imager does and
    appends its C(systemd.run=) arguments to C(cmdline.txt) (once); the script removes itself and them.
  - Every input is checked first, and a refused one writes nothing; the messages name the pi_firstboot role's
    variables (pi_firstboot_<option>). The rendered user-data is checked with C(cloud-init schema) when the
    controller has cloud-init (Debian package cloud-init; without it the module warns), network-config is parsed
    and checked, firstrun.sh is checked with C(bash -n).
  - Nothing is half-written. Each file is written to a temporary name in O(boot_dir) and read back; only when all
    are written are they renamed into place, C(cmdline.txt) last. A failure removes the temporaries and puts back
    what was already renamed. Other files of the partition are not touched.
  - Check mode writes nothing and reports what would change. The diff shows every file, with the secrets
    (Wi-Fi password and PSK, registration token, password hash) replaced by a placeholder naming each, such as
    C(<hidden Wi-Fi PSK>), and those of an earlier write by C(<hidden earlier value>), so a changed secret shows as
    a changed line; they never appear in the result either.
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Secrets are shown as placeholders (C(<hidden Wi-Fi password>), C(<hidden earlier value>)).
  platform:
    platforms: posix
options:
  boot_dir:
    description:
      - The boot partition, mounted (e.g. C(/media/$USER/bootfs)), or a directory holding its files. It must hold
        C(cmdline.txt) and C(config.txt).
    type: path
    required: true
  method:
    description:
      - V(auto) picks V(cloud-init) when O(boot_dir) already has a C(user-data) or C(meta-data) file (the images
        from trixie on ship them), else V(firstrun).
    type: str
    choices: [auto, cloud-init, firstrun]
    default: auto
  hostname:
    description: The Pi's hostname, a lower-case RFC 1123 label.
    type: str
    required: true
  user:
    description: The Pi's user (sudo without a password, as Raspberry Pi OS's first user), which gets O(ssh_keys).
    type: str
    default: pi
  ssh_keys:
    description: OpenSSH public key lines (at least one) that may log in as O(user); password login by SSH is off.
    type: list
    elements: str
    required: true
  password_hash:
    description: The user's password as a crypt hash (C($6$), C($5$) or C($y$)); empty locks the password.
    type: str
    default: ""
  wifi_ssid:
    description: The Wi-Fi network's name (1 to 32 bytes); empty for no Wi-Fi.
    type: str
    default: ""
  wifi_password:
    description: The Wi-Fi passphrase, 8 to 63 printable ASCII characters. Required with O(wifi_ssid).
    type: str
    default: ""
  wifi_country:
    description: The Wi-Fi regulatory country, ISO 3166-1 alpha-2 (e.g. GB). Required with O(wifi_ssid).
    type: str
    default: ""
  wifi_hidden:
    description: Whether the network hides its SSID.
    type: bool
    default: false
  timezone:
    description: The timezone, a name of the controller's zoneinfo (or of the form Area/City without one).
    type: str
    default: Etc/UTC
  register_url:
    description:
      - The attendance server's base URL (http or https). The Pi then POSTs its serial number, hostname, model,
        address and SSH host key to C(<url>/api/register) once, at its first boot with a network
        (C(pi-fleet-register.service)). Empty for no registration.
    type: str
    default: ""
  register_token:
    description: The registration token (at least 16 visible ASCII characters). Required with O(register_url).
    type: str
    default: ""
  register_script:
    description:
      - The registration script installed on the Pi (the role's C(files/pi-fleet-register)). Required with
        O(register_url).
    type: path
"""

EXAMPLES = r"""
- name: Write a fresh card's first-boot configuration
  pi_firstboot_card:
    boot_dir: /media/me/bootfs
    hostname: kiosk-lobby-01
    ssh_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@laptop
    wifi_ssid: Office
    wifi_password: "{{ vault_wifi_password }}"
    wifi_country: GB
    register_url: https://attendance.example.org
    register_token: "{{ vault_registration_token }}"
    register_script: "{{ role_path }}/files/pi-fleet-register"
  register: card

- name: Say what was written
  ansible.builtin.debug:
    msg: "{{ card.method }}: {{ card.files | join(', ') or 'nothing to change' }}"
"""

RETURN = r"""
method:
  description: The method used, O(method) or what V(auto) picked.
  type: str
  returned: success
  sample: cloud-init
files:
  description:
    - The files of O(boot_dir) that were (in check mode, would be) written, in the order they are renamed into place.
  type: list
  elements: str
  returned: success
  sample: [network-config, user-data, meta-data]
instance_id:
  description: The cloud-init instance-id written to meta-data (empty with V(firstrun)).
  type: str
  returned: success
  sample: pi-fleet-kiosk-lobby-01-3f9a0c1d2e4b
validated:
  description: How each rendered file was checked.
  type: list
  elements: str
  returned: success
  sample: ["user-data: cloud-init schema", "network-config: parsed, structure checked"]
registration:
  description: Whether the card registers the Pi with the attendance server.
  type: bool
  returned: success
"""

import hashlib
import json
import os
import re
import shlex
import subprocess
import tempfile
from base64 import b64decode
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from ansible.module_utils.basic import AnsibleModule

# -- what is allowed (the one place these are decided: the role calls this module first) ---------------------------
HOSTNAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
USER = r"^[a-z_][a-z0-9_-]{0,31}$"
SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
SSH_KEY = (r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521"
           r"|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) (AAAA[0-9A-Za-z+/]+={0,2})( [ -~]*)?$")
PASSWORD_HASH = (r"^(\$6\$(rounds=[0-9]+\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}"
                 r"|\$5\$(rounds=[0-9]+\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{43}"
                 r"|\$y\$[./0-9A-Za-z]+\$[./0-9A-Za-z]{1,86}\$[./0-9A-Za-z]{43})$")
WIFI_PASSWORD = r"^[ -~]{8,63}$"
# ISO 3166-1 alpha-2.
COUNTRY_CODES = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW "
    "BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI "
    "FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN "
    "IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME "
    "MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF "
    "PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV "
    "SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE "
    "YT ZA ZM ZW")
COUNTRIES = frozenset(COUNTRY_CODES.split())
ZONEINFO = "/usr/share/zoneinfo"
TIMEZONE = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
TIMEZONE_FORM = r"^[A-Za-z]+(/[A-Za-z0-9_+-]+)+$"
REGISTER_URL = r"^https?://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[^\s?#]*)?$"
REGISTER_TOKEN = r"^[!-~]{16,}$"

# -- what the Pi gets --------------------------------------------------------------------------------------------
# Raspberry Pi OS's first user: sudo without a password (its 010_pi-nopasswd), and these groups (Raspberry Pi Imager's).
GROUPS = ["users", "adm", "dialout", "audio", "netdev", "video", "plugdev", "cdrom", "games", "input", "gpio", "spi",
          "i2c", "render", "sudo"]
SUDO = "ALL=(ALL) NOPASSWD:ALL"
# What Raspberry Pi Imager appends to cmdline.txt for firstrun.sh (bookworm's initramfs moves /boot/ to
# /boot/firmware/ in both files, and cuts firstrun.sh at its first `rm ... firstrun.sh` line, adding its own end).
FIRSTRUN_ARGS = (" systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot"
                 " systemd.unit=kernel-command-line.target")
FIRSTRUN_END = "rm -f /boot/firstrun.sh"
IMAGER_CUSTOM = "/usr/lib/raspberrypi-sys-mods/imager_custom"
USERCONF = "/usr/lib/userconf-pi/userconf"
REGISTER_PATH = "/usr/local/sbin/pi-fleet-register"
REGISTER_CONFIG = "/etc/pi-fleet/register.json"
REGISTER_UNIT = "/etc/systemd/system/pi-fleet-register.service"
UNIT = """\
[Unit]
Description=Register this Pi with the pi-fleet attendance server (once)
Wants=network-online.target
After=network-online.target
ConditionPathExists=!/var/lib/pi-fleet/registered
# Retried every minute until the server answers (a 409, a duplicate, exits 3: a person must look at it).
StartLimitIntervalSec=0

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/pi-fleet-register
Restart=on-failure
RestartSec=60
RestartPreventExitStatus=3

[Install]
WantedBy=multi-user.target
"""
HEREDOC = "PI_FLEET_EOF"
# Renamed into place in this order: cmdline.txt last (it arms firstrun.sh), meta-data after what it names.
ORDER = ["firstrun.sh", "network-config", "user-data", "meta-data", "cmdline.txt"]
# Mode of a file the card does not have yet (a directory standing in for a card; FAT has no modes).
NEW_MODES = {"firstrun.sh": 0o700, "user-data": 0o600, "network-config": 0o600, "meta-data": 0o644}


class Refused(Exception):
    """An input or a rendered file that is not allowed; nothing was written."""


class Card(NamedTuple):
    hostname: str
    user: str
    ssh_keys: tuple[str, ...]
    password_hash: str
    wifi_ssid: str
    wifi_password: str
    wifi_country: str
    wifi_hidden: bool
    timezone: str
    register_url: str
    register_token: str
    register_script: str

    @property
    def psk(self) -> str:
        """The WPA PSK, as wpa_passphrase and Raspberry Pi Imager compute it: the passphrase never reaches a shell."""
        return hashlib.pbkdf2_hmac("sha1", self.wifi_password.encode(), self.wifi_ssid.encode(), 4096, 32).hex()

    def secrets(self) -> list[str]:
        return [s for s in (self.wifi_password, self.psk if self.wifi_ssid else "", self.password_hash,
                            self.register_token) if s]


# -- the inputs --------------------------------------------------------------------------------------------------
def shown(value: str, limit: int = 60) -> str:
    text = value if len(value) <= limit else value[:limit] + "..."
    return repr(text)


def ssh_key_problem(line: str) -> str | None:
    """Why `line` is not an OpenSSH public key line, or None."""
    found = re.fullmatch(SSH_KEY, line)
    if not found:
        return "not `<type> <base64 body> [comment]` of a known type"
    try:
        blob = b64decode(found.group(2), validate=True)
    except ValueError:
        return "its body is not base64"
    size = int.from_bytes(blob[:4], "big")
    if len(blob) < 4 + size or blob[4:4 + size] != found.group(1).encode():
        return f"its body is not an {found.group(1)} key"
    return None


def timezone_ok(name: str) -> bool:
    if not re.fullmatch(TIMEZONE, name):
        return False
    if not os.path.isdir(ZONEINFO):
        return bool(re.fullmatch(TIMEZONE_FORM, name))
    try:
        with open(os.path.join(ZONEINFO, name), "rb") as zone:
            return zone.read(4) == b"TZif"
    except OSError:
        return False


def problems(params: dict[str, Any]) -> list[str]:
    """One message per refused input: the variable, the value (described, for a secret) and what is allowed."""
    out: list[str] = []

    def refuse(option: str, value: str, allowed: str) -> None:
        out.append(f"pi_firstboot_{option}={value} is not allowed: {allowed}.")

    boot = Path(params["boot_dir"] or "")
    if not params["boot_dir"] or not boot.is_dir():
        refuse("boot_dir", repr(str(params["boot_dir"] or "")),
               "a directory that exists: the mounted boot partition of the card (e.g. /media/$USER/bootfs)")
    else:
        missing = [f for f in ("cmdline.txt", "config.txt") if not (boot / f).is_file()]
        if missing:
            refuse("boot_dir", repr(str(boot)), f"a Raspberry Pi OS boot partition, which holds cmdline.txt and "
                   f"config.txt; it has no {' and no '.join(missing)} (is the card's boot partition mounted there?)")
    if not re.fullmatch(HOSTNAME, params["hostname"] or ""):
        refuse("hostname", shown(params["hostname"] or ""), "a lower-case RFC 1123 label (a-z, 0-9 and '-', "
               "1 to 63 characters, neither starting nor ending with '-'), e.g. kiosk-lobby-01")
    if not re.fullmatch(USER, params["user"]) or params["user"] == "root":
        refuse("user", shown(params["user"]), "a Linux user name other than root (a-z, 0-9, '_' and '-', starting "
               "with a letter or '_', at most 32 characters)")
    keys = params["ssh_keys"] or []
    if not keys:
        refuse("ssh_keys", "[]", "at least one OpenSSH public key line (password login by SSH is off, so a key is "
               "the only way in)")
    for index, key in enumerate(keys):
        why = ssh_key_problem(key)
        if why:
            refuse(f"ssh_keys[{index}]", shown(key), f"an OpenSSH public key line, `<type> <base64 body> "
                   f"[comment]` of type {', '.join(SSH_KEY_TYPES)} ({why})")
    if params["password_hash"] and not re.fullmatch(PASSWORD_HASH, params["password_hash"]):
        refuse("password_hash", f"(hidden, {len(params['password_hash'])} characters)", "empty (the password locked) "
               "or a crypt hash: $6$ (SHA-512), $5$ (SHA-256) or $y$ (yescrypt), e.g. from `mkpasswd -m sha-512`")
    ssid, password, country = params["wifi_ssid"], params["wifi_password"], params["wifi_country"]
    if ssid and (len(ssid.encode()) > 32 or re.search(r"[\x00-\x1f\x7f]", ssid)):
        refuse("wifi_ssid", shown(ssid), "1 to 32 bytes (UTF-8) without control characters, or empty for no Wi-Fi")
    if ssid and not re.fullmatch(WIFI_PASSWORD, password):
        refuse("wifi_password", f"(hidden, {len(password)} characters)", "8 to 63 printable ASCII characters (a WPA "
               "passphrase), required with pi_firstboot_wifi_ssid")
    if password and not ssid:
        refuse("wifi_password", f"(hidden, {len(password)} characters)", "empty while pi_firstboot_wifi_ssid is empty "
               "(no Wi-Fi): set the SSID too")
    if (ssid or country) and country not in COUNTRIES:
        refuse("wifi_country", shown(country), "an ISO 3166-1 alpha-2 country code in upper case (e.g. GB, DE, US), "
               "required with pi_firstboot_wifi_ssid (the Wi-Fi regulatory domain)")
    if not timezone_ok(params["timezone"]):
        allowed = (f"a timezone of the controller's zoneinfo ({ZONEINFO}), e.g. Europe/London or Etc/UTC"
                   if os.path.isdir(ZONEINFO) else "a timezone of the form Area/City, e.g. Europe/London")
        refuse("timezone", shown(params["timezone"]), allowed)
    url, token = params["register_url"], params["register_token"]
    if url and not re.fullmatch(REGISTER_URL, url):
        refuse("register_url", shown(url), "the attendance server's base URL, http(s)://host[:port][/path] without "
               "user, query or fragment, or empty for no registration")
    if url and not re.fullmatch(REGISTER_TOKEN, token):
        refuse("register_token", f"(hidden, {len(token)} characters)", "the registration token, at least 16 visible "
               "ASCII characters without spaces (from the vault), required with pi_firstboot_register_url")
    if token and not url:
        refuse("register_token", f"(hidden, {len(token)} characters)", "empty while pi_firstboot_register_url is "
               "empty (no registration): set the URL too")
    if url and not (params["register_script"] and os.path.isfile(params["register_script"])):
        refuse("register_script", repr(str(params["register_script"] or "")), "the registration script (the role's "
               "files/pi-fleet-register), required with pi_firstboot_register_url")
    return out


# -- rendering ---------------------------------------------------------------------------------------------------
class Dumper(yaml.SafeDumper):
    """YAML as a person reads it: multi-line text as a literal block, nothing folded."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, width=10000, allow_unicode=True, default_flow_style=False)


def register_config(card: Card) -> str:
    return json.dumps({"url": card.register_url, "token": card.register_token}) + "\n"


def user_data(card: Card) -> dict[str, Any]:
    user: dict[str, Any] = {"name": card.user, "groups": GROUPS, "shell": "/bin/bash", "sudo": SUDO,
                            "lock_passwd": not card.password_hash}
    if card.password_hash:
        user["hashed_passwd"] = card.password_hash
    user["ssh_authorized_keys"] = list(card.ssh_keys)
    config: dict[str, Any] = {"hostname": card.hostname, "manage_etc_hosts": True, "timezone": card.timezone,
                              # Raspberry Pi OS's own key (as Imager writes it): enable the SSH server.
                              "enable_ssh": True, "ssh_pwauth": False, "users": [user]}
    if card.register_url:
        config["write_files"] = [
            {"path": REGISTER_PATH, "owner": "root:root", "permissions": "0755", "content": card.register_script},
            {"path": REGISTER_CONFIG, "owner": "root:root", "permissions": "0600", "content": register_config(card)},
            {"path": REGISTER_UNIT, "owner": "root:root", "permissions": "0644", "content": UNIT}]
        config["runcmd"] = [["systemctl", "daemon-reload"], ["systemctl", "enable", "pi-fleet-register.service"],
                            ["systemctl", "start", "--no-block", "pi-fleet-register.service"]]
    return config


def network_config(card: Card) -> dict[str, Any]:
    network: dict[str, Any] = {"version": 2, "ethernets": {"eth0": {"dhcp4": True, "optional": True}}}
    if card.wifi_ssid:
        access_point: dict[str, Any] = {"password": card.wifi_password}
        if card.wifi_hidden:
            access_point["hidden"] = True
        network["wifis"] = {"wlan0": {"dhcp4": True, "regulatory-domain": card.wifi_country,
                                      "access-points": {card.wifi_ssid: access_point}, "optional": True}}
    return {"network": network}


def instance_id(card: Card, texts: list[str]) -> str:
    """pi-fleet-<hostname>-<hash of the content>: a rewritten card is a new instance to cloud-init. The content holds
    the Wi-Fi password and the id is shown in logs, so the hash is slow on purpose (guesses cost as much as WPA's)."""
    digest = hashlib.pbkdf2_hmac("sha256", "".join(texts).encode(), b"pi-fleet instance-id", 4096, 6)
    return f"pi-fleet-{card.hostname}-{digest.hex()}"


def render_cloud_init(card: Card) -> dict[str, str]:
    header = (f"# Written by pi-fleet (playbooks/firstboot.yml) for {card.hostname}: cloud-init reads it at the first "
              f"boot of this card.\n")
    files = {"user-data": "#cloud-config\n" + header + dump(user_data(card)),
             "network-config": header + dump(network_config(card))}
    instance = instance_id(card, [files["user-data"], files["network-config"]])
    files["meta-data"] = header + dump({"instance-id": instance, "local-hostname": card.hostname})
    return files


def heredoc(path: str, content: str) -> list[str]:
    if HEREDOC in content.splitlines():
        raise Refused(f"{path} holds a line {HEREDOC}, which would end its here-document in firstrun.sh")
    return [f"cat >{path} <<'{HEREDOC}'", *content.rstrip("\n").split("\n"), HEREDOC]


def render_firstrun(card: Card) -> str:
    """firstrun.sh as Raspberry Pi Imager writes it for bookworm (imager_custom and userconf, with Imager's fallbacks),
    every value shell-quoted."""
    q = shlex.quote
    user, host = q(card.user), q(card.hostname)
    keys = " ".join(q(k) for k in card.ssh_keys)
    lines = [
        "#!/bin/bash",
        f"# Written by pi-fleet (playbooks/firstboot.yml) for {card.hostname}: Raspberry Pi OS runs it once, at the",
        "# first boot of this card (cmdline.txt's systemd.run=), then it removes itself and those arguments.",
        "",
        "set +e",
        "",
        'CURRENT_HOSTNAME=$(tr -d " \\t\\n\\r" </etc/hostname)',
        f"if [ -f {IMAGER_CUSTOM} ]; then",
        f"   {IMAGER_CUSTOM} set_hostname {host}",
        "else",
        f"   echo {host} >/etc/hostname",
        f'   sed -i "s/127.0.1.1.*$CURRENT_HOSTNAME/127.0.1.1\\t"{host}"/g" /etc/hosts',
        "fi",
        "FIRSTUSER=$(getent passwd 1000 | cut -d: -f1)",
        "FIRSTUSERHOME=$(getent passwd 1000 | cut -d: -f6)",
        f"if [ -f {IMAGER_CUSTOM} ]; then",
        f"   {IMAGER_CUSTOM} enable_ssh -k {keys}",
        "else",
        '   install -o "$FIRSTUSER" -m 700 -d "$FIRSTUSERHOME/.ssh"',
        f'   printf \'%s\\n\' {keys} >"$FIRSTUSERHOME/.ssh/authorized_keys"',
        '   chown "$FIRSTUSER:$FIRSTUSER" "$FIRSTUSERHOME/.ssh/authorized_keys"',
        '   chmod 600 "$FIRSTUSERHOME/.ssh/authorized_keys"',
        "   echo 'PasswordAuthentication no' >>/etc/ssh/sshd_config",
        "   systemctl enable ssh",
        "fi",
        f"if [ -f {USERCONF} ]; then",
        f"   {USERCONF} {user} {q(card.password_hash)}",
        "else",
        *([f'   echo "$FIRSTUSER:"{q(card.password_hash)} | chpasswd -e'] if card.password_hash else []),
        f'   if [ "$FIRSTUSER" != {user} ]; then',
        f'      usermod -l {user} "$FIRSTUSER"',
        f"      usermod -m -d {q('/home/' + card.user)} {user}",
        f'      groupmod -n {user} "$FIRSTUSER"',
        '      if grep -q "^autologin-user=" /etc/lightdm/lightdm.conf ; then',
        f'         sed /etc/lightdm/lightdm.conf -i -e "s/^autologin-user=.*/autologin-user="{user}"/"',
        "      fi",
        "      if [ -f /etc/systemd/system/getty@tty1.service.d/autologin.conf ]; then",
        f'         sed /etc/systemd/system/getty@tty1.service.d/autologin.conf -i -e "s/$FIRSTUSER/"{user}"/"',
        "      fi",
        "      if [ -f /etc/sudoers.d/010_pi-nopasswd ]; then",
        f'         sed -i "s/^$FIRSTUSER /"{user}" /" /etc/sudoers.d/010_pi-nopasswd',
        "      fi",
        "   fi",
        "fi",
    ]
    if not card.password_hash:
        lines += ["# No password: it is locked (SSH keys only).", f"passwd -l {user}"]
    if card.wifi_ssid:
        hidden = " -h" if card.wifi_hidden else ""
        wpa = [f"country={card.wifi_country}", "ctrl_interface=DIR=/var/run/wpa_supplicant GROUP=netdev", "ap_scan=1",
               "", "update_config=1", "network={", *(["\tscan_ssid=1"] if card.wifi_hidden else []),
               # The SSID in hex: any byte, no quoting.
               f"\tssid={card.wifi_ssid.encode().hex()}", "\tkey_mgmt=WPA-PSK SAE", f"\tpsk={card.psk}",
               "\tieee80211w=1", "}"]
        lines += [
            f"if [ -f {IMAGER_CUSTOM} ]; then",
            f"   {IMAGER_CUSTOM} set_wlan{hidden} {q(card.wifi_ssid)} {q(card.psk)} {q(card.wifi_country)}",
            "else",
            *heredoc("/etc/wpa_supplicant/wpa_supplicant.conf", "\n".join(wpa)),
            "   chmod 600 /etc/wpa_supplicant/wpa_supplicant.conf",
            "   rfkill unblock wifi",
            "   for filename in /var/lib/systemd/rfkill/*:wlan ; do",
            '       echo 0 > "$filename"',
            "   done",
            "fi",
        ]
    lines += [
        f"if [ -f {IMAGER_CUSTOM} ]; then",
        f"   {IMAGER_CUSTOM} set_timezone {q(card.timezone)}",
        "else",
        "   rm -f /etc/localtime",
        f"   echo {q(card.timezone)} >/etc/timezone",
        "   dpkg-reconfigure -f noninteractive tzdata",
        "fi",
    ]
    if card.register_url:
        lines += [
            "# The registration with the attendance server, at the next boot with a network.",
            f"install -d -m 0755 {os.path.dirname(REGISTER_PATH)} {os.path.dirname(REGISTER_UNIT)}",
            f"install -d -m 0700 {os.path.dirname(REGISTER_CONFIG)}",
            *heredoc(REGISTER_PATH, card.register_script),
            f"chmod 0755 {REGISTER_PATH}",
            "umask 077",
            *heredoc(REGISTER_CONFIG, register_config(card)),
            f"chmod 0600 {REGISTER_CONFIG}",
            "umask 022",
            *heredoc(REGISTER_UNIT, UNIT),
            "systemctl enable pi-fleet-register.service",
        ]
    # Imager's end, which bookworm's initramfs finds and replaces by its own (the first `rm ... firstrun.sh` line).
    lines += [FIRSTRUN_END, "sed -i 's| systemd.run.*||g' /boot/cmdline.txt", "exit 0"]
    return "\n".join(lines) + "\n"


def armed_cmdline(text: str) -> str:
    """cmdline.txt with firstrun.sh's arguments appended to its one line (once)."""
    line = text.rstrip("\r\n")
    if "\n" in line:
        raise Refused("cmdline.txt holds more than one line (the kernel reads only its first): fix it by hand first")
    if FIRSTRUN_ARGS.strip() in line:
        return text
    if "systemd.run=" in line:
        other = re.search(r"systemd\.run=\S*", line)
        raise Refused(f"cmdline.txt already runs another first-boot script ({other.group(0) if other else ''}): "
                      f"remove it, or write a fresh card")
    return line.rstrip() + FIRSTRUN_ARGS + "\n"


def render(card: Card, method: str, cmdline: str) -> dict[str, str]:
    if method == "cloud-init":
        return render_cloud_init(card)
    return {"firstrun.sh": render_firstrun(card), "cmdline.txt": armed_cmdline(cmdline)}


# -- checking what was rendered ----------------------------------------------------------------------------------
def check(module: AnsibleModule, card: Card, files: dict[str, str]) -> list[str]:
    """Check the rendered files (in a directory of their own, off the card); return how each was checked."""
    done: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pi-firstboot-") as scratch:
        if "user-data" in files:
            text = files["user-data"]
            if not text.startswith("#cloud-config\n") or yaml.safe_load(text) != user_data(card):
                raise Refused("the rendered user-data does not read back as what was meant (a rendering bug)")
            cloud_init = module.get_bin_path("cloud-init")
            if cloud_init:
                path = Path(scratch, "user-data")
                path.write_text(text)
                proc = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True,
                                      text=True, check=False)
                if proc.returncode != 0:
                    said = (proc.stderr.strip() or proc.stdout.strip()).replace(str(path), "user-data")
                    raise Refused(f"cloud-init schema refuses the rendered user-data: {mask(said, card)}")
                done.append("user-data: cloud-init schema")
            else:
                module.warn("cloud-init is not installed on the controller, so the rendered user-data was not checked "
                            "against its schema (Debian package cloud-init; scripts/testbed-setup installs it)")
                done.append("user-data: parsed (cloud-init not installed: schema not checked)")
        if "network-config" in files:
            done.append(check_network_config(card, files["network-config"]))
        if "meta-data" in files:
            meta = yaml.safe_load(files["meta-data"])
            if not (isinstance(meta, dict) and meta.get("local-hostname") == card.hostname
                    and str(meta.get("instance-id", "")).startswith(f"pi-fleet-{card.hostname}-")):
                raise Refused("the rendered meta-data lacks its instance-id or local-hostname (a rendering bug)")
            done.append("meta-data: parsed")
        if "firstrun.sh" in files:
            done.append(check_firstrun(module, card, files["firstrun.sh"], scratch))
    return done


def check_network_config(card: Card, text: str) -> str:
    data = yaml.safe_load(text)
    network = data.get("network") if isinstance(data, dict) else None
    if not isinstance(network, dict) or network.get("version") != 2 or data != network_config(card):
        raise Refused("the rendered network-config is not the netplan version 2 that was meant (a rendering bug)")
    if card.wifi_ssid:
        wlan = network.get("wifis", {}).get("wlan0", {})
        points = wlan.get("access-points")
        if (not isinstance(points, dict) or list(points) != [card.wifi_ssid]
                or points[card.wifi_ssid].get("password") != card.wifi_password
                or wlan.get("regulatory-domain") != card.wifi_country or wlan.get("dhcp4") is not True):
            raise Refused("the rendered network-config lacks the Wi-Fi access point (a rendering bug)")
    elif "wifis" in network:
        raise Refused("the rendered network-config has Wi-Fi without an SSID (a rendering bug)")
    return "network-config: parsed, structure checked"


def check_firstrun(module: AnsibleModule, card: Card, text: str, scratch: str) -> str:
    # Bookworm's initramfs cuts the script at its first `rm ... firstrun.sh` line: it must be the end.
    cuts = [i for i, line in enumerate(text.splitlines()) if re.search(r"rm.*firstrun\.sh$", line)]
    if cuts != [len(text.splitlines()) - 3]:
        raise Refused("firstrun.sh would be cut short by bookworm's initramfs (a line ending in `rm ... firstrun.sh` "
                      "before its end)")
    bash = module.get_bin_path("bash")
    if not bash:
        module.warn("bash is not installed on the controller, so firstrun.sh was not checked with bash -n")
        return "firstrun.sh: not checked (no bash)"
    path = Path(scratch, "firstrun.sh")
    path.write_text(text)
    proc = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise Refused(f"bash -n refuses the rendered firstrun.sh: {mask(proc.stderr.strip(), card)}")
    return "firstrun.sh: bash -n"


# -- secrets out of the diff -------------------------------------------------------------------------------------
def variants(secret: str) -> set[str]:
    """How a secret can appear in the files: as is, and as JSON, YAML and the shell quote it."""
    forms = {secret, json.dumps(secret)[1:-1], shlex.quote(secret), secret.replace("'", "''")}
    forms |= {yaml.safe_dump(secret, width=10000).strip().removesuffix("\n...").strip()}
    return {f for f in forms if len(f) >= 4}


def _earlier(placeholder: str) -> Any:
    def replace(found: re.Match[str]) -> str:
        return found.group(0) if HIDDEN_MARK in found.group(0) else found.expand(placeholder)
    return replace


HIDDEN_MARK = "<hidden"
EARLIER = "<hidden earlier value>"
# What a secret of an earlier write looks like (its value unknown here): a PSK, a crypt hash, a token, a password line.
EARLIER_SECRETS = [
    (re.compile(r"\b[0-9a-f]{64}\b"), EARLIER),
    (re.compile(r"\$(?:1|2[abxy]|5|6|7|y|gy)\$[./0-9A-Za-z$=,]+"), EARLIER),
    (re.compile(r'("token"\s*:\s*)"(?:[^"\\]|\\.)*"'), rf'\1"{EARLIER}"'),
    (re.compile(r"^([ \t]*(?:password|hashed_passwd|passwd|psk)[ \t]*[:=][ \t]*)\S.*$", re.MULTILINE),
     rf"\1{EARLIER}"),
]


def mask(text: str, card: Card) -> str:
    """`text` (a file, before or after, a checker's words) with this card's secrets replaced by a placeholder naming
    each, and whatever looks like a secret of an earlier write by `<hidden earlier value>`: a diff shows that a secret
    changes, never what it is."""
    named = [(card.wifi_password, "Wi-Fi password"), (card.psk if card.wifi_ssid else "", "Wi-Fi PSK"),
             (card.password_hash, "password hash"), (card.register_token, "registration token")]
    forms = {form: f"{HIDDEN_MARK} {label}>" for secret, label in named if secret for form in variants(secret)}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, forms[form])
    for pattern, placeholder in EARLIER_SECRETS:
        text = pattern.sub(_earlier(placeholder), text)
    return text


# -- writing -----------------------------------------------------------------------------------------------------
class Change(NamedTuple):
    name: str
    before: bytes | None
    after: bytes
    mode: int


def write_temporary(boot: Path, change: Change) -> Path:
    """The new content under a temporary name beside the file (with the file's mode: FAT ignores modes, where a
    chmod would fail), flushed and read back."""
    path = boot / f".{change.name}.pi-fleet-{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, change.mode)
        with os.fdopen(fd, "wb") as out:
            out.write(change.after)
            out.flush()
            os.fsync(out.fileno())
        if path.read_bytes() != change.after:
            raise OSError(f"{path} does not read back as written (a failing card?)")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def sync_dir(boot: Path) -> None:
    try:
        fd = os.open(boot, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(boot: Path, changes: list[Change]) -> None:
    """Write every change or none: temporaries first, then renamed into place in ORDER (cmdline.txt last). On any
    failure the temporaries are removed and what was already renamed is put back."""
    temporaries: dict[str, Path] = {}
    renamed: list[Change] = []
    try:
        for change in changes:
            temporaries[change.name] = write_temporary(boot, change)
        sync_dir(boot)
        for change in changes:
            os.replace(temporaries[change.name], boot / change.name)
            del temporaries[change.name]
            renamed.append(change)
        sync_dir(boot)
    except BaseException:
        for path in temporaries.values():
            path.unlink(missing_ok=True)
        for change in reversed(renamed):
            if change.before is None:
                (boot / change.name).unlink(missing_ok=True)
            else:
                os.replace(write_temporary(boot, Change(change.name, None, change.before, change.mode)),
                           boot / change.name)
        sync_dir(boot)
        raise


def plan(boot: Path, files: dict[str, str]) -> list[Change]:
    changes = []
    for name in sorted(files, key=ORDER.index):
        path = boot / name
        if path.is_symlink() or (path.exists() and not path.is_file()):
            raise Refused(f"{path} is not a regular file")
        before = path.read_bytes() if path.exists() else None
        after = files[name].encode(errors="surrogateescape")
        if before != after:
            mode = path.stat().st_mode & 0o7777 if before is not None else NEW_MODES.get(name, 0o644)
            changes.append(Change(name, before, after, mode))
    return changes


# -- the module --------------------------------------------------------------------------------------------------
def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "boot_dir": {"type": "path", "required": True},
            "method": {"type": "str", "choices": ["auto", "cloud-init", "firstrun"], "default": "auto"},
            "hostname": {"type": "str", "required": True},
            "user": {"type": "str", "default": "pi"},
            "ssh_keys": {"type": "list", "elements": "str", "required": True},
            "password_hash": {"type": "str", "default": "", "no_log": True},
            "wifi_ssid": {"type": "str", "default": ""},
            "wifi_password": {"type": "str", "default": "", "no_log": True},
            "wifi_country": {"type": "str", "default": ""},
            "wifi_hidden": {"type": "bool", "default": False},
            "timezone": {"type": "str", "default": "Etc/UTC"},
            "register_url": {"type": "str", "default": ""},
            "register_token": {"type": "str", "default": "", "no_log": True},
            "register_script": {"type": "path"},
        },
        supports_check_mode=True,
    )
    params = module.params
    refused = problems(params)
    if refused:
        module.fail_json(msg=" ".join(refused) + " Nothing was written.")
    boot = Path(params["boot_dir"])
    card = Card(hostname=params["hostname"], user=params["user"], ssh_keys=tuple(params["ssh_keys"]),
                password_hash=params["password_hash"], wifi_ssid=params["wifi_ssid"],
                wifi_password=params["wifi_password"] if params["wifi_ssid"] else "",
                wifi_country=params["wifi_country"] if params["wifi_ssid"] else "",
                wifi_hidden=params["wifi_hidden"] and bool(params["wifi_ssid"]), timezone=params["timezone"],
                register_url=params["register_url"].rstrip("/"), register_token=params["register_token"],
                register_script=Path(params["register_script"]).read_text() if params["register_url"] else "")
    module.no_log_values.update(card.secrets())
    method = params["method"]
    has_cloud_init = any((boot / f).exists() for f in ("user-data", "meta-data"))
    if method == "auto":
        method = "cloud-init" if has_cloud_init else "firstrun"
    cmdline = (boot / "cmdline.txt").read_text(errors="surrogateescape")
    if method == "cloud-init" and FIRSTRUN_ARGS.strip() in cmdline:
        module.warn("cmdline.txt still runs firstrun.sh (written by an earlier firstrun run on this card): the Pi "
                    "runs it at its first boot too")
    if method == "firstrun" and has_cloud_init:
        module.warn("this card has cloud-init's user-data or meta-data (Raspberry Pi OS from trixie on), which "
                    "configures it at the first boot, not firstrun.sh: use method cloud-init (or auto)")
    try:
        files = render(card, method, cmdline)
        validated = check(module, card, files)
        changes = plan(boot, files)
    except Refused as exc:
        module.fail_json(msg=f"{exc}. Nothing was written.")
    result: dict[str, Any] = {
        "changed": bool(changes), "method": method, "files": [c.name for c in changes], "validated": validated,
        "instance_id": yaml.safe_load(files["meta-data"])["instance-id"] if "meta-data" in files else "",
        "registration": bool(card.register_url)}
    if module._diff:
        result["diff"] = [{"before_header": str(boot / c.name), "after_header": str(boot / c.name),
                           "before": mask(c.before.decode(errors="replace"), card) if c.before is not None else "",
                           "after": mask(files[c.name], card)} for c in changes]
    if changes and not module.check_mode:
        try:
            commit(boot, changes)
        except OSError as exc:
            module.fail_json(msg=f"Writing to {boot} failed ({exc}); what was written is removed again and the "
                             f"partition is as it was.", **{k: v for k, v in result.items() if k != "changed"})
    module.exit_json(**result)


if __name__ == "__main__":
    main()
