"""A guest's first boot, as cloud-init's NoCloud data source reads it: what goes in the seed.

Pure: validated values in, the seed's files out (`meta-data`, `user-data`). Both are written as JSON,
which is YAML too, so no text is ever pasted into YAML by hand: a key comment or a user name can never
break out of its field. The seed itself (an ISO 9660 volume labelled `cidata`) is made at the edge
(adapters/seed.py).

Network: none given, so cloud-init applies its fallback, DHCP on the first NIC.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from corral.core.errors import InvalidInput

# OpenSSH's public key types (ssh-keygen -t …, and FIDO keys)
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com", "ssh-dss")
_KEY = re.compile(r"(?P<type>[a-z0-9@.-]+) (?P<blob>[A-Za-z0-9+/]+={0,2})(?: (?P<comment>[^\x00-\x1f\x7f]{0,200}))?")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_HASH = re.compile(r"\$(?:6|5|y|2[aby])\$[./A-Za-z0-9$]{8,200}")
RESERVED_USERS = ("root", "daemon", "bin", "sys", "nobody")
MAX_KEYS = 32


@dataclass(frozen=True)
class FirstBoot:
    """What a guest's first boot is given: its hostname (the guest's name), the user to make (None: the
    image's default user, e.g. `debian`), their SSH keys and password hash (None: password login off)."""

    hostname: str
    instance_id: str
    user: str | None = None
    ssh_keys: tuple[str, ...] = ()
    password_hash: str | None = None

    def __post_init__(self) -> None:
        if self.user is not None:
            check_user(self.user)
        if len(self.ssh_keys) > MAX_KEYS:
            raise InvalidInput(f"at most {MAX_KEYS} SSH keys")
        for key in self.ssh_keys:
            check_ssh_key(key)
        if self.password_hash is not None and not _HASH.fullmatch(self.password_hash):
            raise InvalidInput("the password must be given as a crypt(3) hash ($6$…); Corral hashes it for you")
        if self.password_hash is not None and self.user is None:
            # The image's default user is named by the image (debian, ubuntu, fedora …): not Corral's to guess.
            raise InvalidInput("a password is set for the user Corral makes: give --user NAME too")


def check_user(user: str) -> str:
    if not _USER.fullmatch(user):
        raise InvalidInput(f"invalid user name {user!r}: lower-case letters, digits, '_' and '-', "
                           "starting with a letter or '_', at most 32")
    if user in RESERVED_USERS:
        raise InvalidInput(f"user {user!r} is a system account; choose another name")
    return user


def check_ssh_key(line: str) -> str:
    """One public key line (`type base64 [comment]`); a private key or anything else is refused."""
    if "PRIVATE KEY" in line:
        raise InvalidInput("that is a private key: give the public one (the .pub file)")
    found = _KEY.fullmatch(line.strip())
    if found is None or found.group("type") not in KEY_TYPES:
        shown = line.strip()[:40]
        raise InvalidInput(f"not an SSH public key: {shown!r} (expected a line such as 'ssh-ed25519 AAAA… you@host')")
    return line.strip()


def parse_key_file(text: str, source: str) -> tuple[str, ...]:
    """The public keys of an authorized_keys-style text: one per line, blank lines and comments skipped."""
    keys = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(check_ssh_key(line))
        except InvalidInput as exc:
            raise InvalidInput(f"{source}, line {number}: {exc.message}") from None
    if not keys:
        raise InvalidInput(f"{source} holds no SSH public key")
    return tuple(keys)


def seed_files(boot: FirstBoot) -> dict[str, bytes]:
    """The NoCloud seed's files."""
    meta = {"instance-id": boot.instance_id, "local-hostname": boot.hostname}
    config: dict[str, object] = {
        "hostname": boot.hostname,
        "manage_etc_hosts": True,
        "ssh_pwauth": boot.password_hash is not None,
        "disable_root": True,
    }
    if boot.user is None:
        config["users"] = ["default"]
        if boot.ssh_keys:
            config["ssh_authorized_keys"] = list(boot.ssh_keys)  # the default user's
    else:
        user: dict[str, object] = {
            "name": boot.user,
            "groups": ["sudo"],
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "lock_passwd": boot.password_hash is None,
        }
        if boot.ssh_keys:
            user["ssh_authorized_keys"] = list(boot.ssh_keys)
        if boot.password_hash is not None:
            user["passwd"] = boot.password_hash
        config["users"] = ["default", user]
    return {
        "meta-data": (json.dumps(meta, indent=1) + "\n").encode(),
        "user-data": ("#cloud-config\n" + json.dumps(config, indent=1) + "\n").encode(),
    }


def reseeded(files: dict[str, bytes], hostname: str, instance_id: str) -> dict[str, bytes]:
    """A copy of a seed Corral made, for a clone: its own hostname and instance id (so cloud-init treats
    it as a new machine: new SSH host keys, new machine id), the same user and keys."""
    try:
        meta = json.loads(files["meta-data"])
        header, _, body = files["user-data"].decode().partition("\n")
        config = json.loads(body)
    except (KeyError, ValueError, UnicodeDecodeError):
        raise InvalidInput("the guest's seed was not made by Corral; it cannot be copied for a clone") from None
    if header != "#cloud-config" or not isinstance(meta, dict) or not isinstance(config, dict):
        raise InvalidInput("the guest's seed was not made by Corral; it cannot be copied for a clone")
    meta.update({"instance-id": instance_id, "local-hostname": hostname})
    config["hostname"] = hostname
    return {**files, "meta-data": (json.dumps(meta, indent=1) + "\n").encode(),
            "user-data": ("#cloud-config\n" + json.dumps(config, indent=1) + "\n").encode()}
