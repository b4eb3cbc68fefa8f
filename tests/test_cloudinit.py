"""A guest's first boot, pure (core/cloudinit.py), its seed (adapters/seed.py) and the CLI's bad input:
no libvirt needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corral.adapters.seed import read_seed, seed_iso
from corral.core.cloudinit import FirstBoot, check_ssh_key, parse_key_file, reseeded, seed_files
from corral.core.errors import InvalidInput
from corral.core.spec import GuestSpec, spec_from_mapping

CORRAL_BIN = str(Path(sys.executable).with_name("corral"))
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVj2hSkt2JpLq6mJ5zZ0K5D8h4vXWmXl0V8yqL8f2Xq admin@laptop"
HASH = "$6$saltsalt$" + "a" * 86


def config(files: dict[str, bytes]) -> dict[str, object]:
    header, _, body = files["user-data"].decode().partition("\n")
    assert header == "#cloud-config"
    parsed = json.loads(body)
    assert isinstance(parsed, dict)
    return parsed


def test_the_seed_names_the_host_and_makes_the_user_with_the_keys() -> None:
    files = seed_files(FirstBoot("web", "iid-1", "admin", (KEY,), HASH))
    assert json.loads(files["meta-data"]) == {"instance-id": "iid-1", "local-hostname": "web"}
    user_data = config(files)
    assert user_data["hostname"] == "web" and user_data["ssh_pwauth"] is True
    users = user_data["users"]
    assert isinstance(users, list) and users[0] == "default"
    assert users[1] == {"name": "admin", "groups": ["sudo"], "sudo": "ALL=(ALL) NOPASSWD:ALL", "shell": "/bin/bash",
                        "lock_passwd": False, "ssh_authorized_keys": [KEY], "passwd": HASH}
    # Without a user, the keys go to the image's default user and password login stays off.
    plain = config(seed_files(FirstBoot("db", "iid-2", None, (KEY,))))
    assert plain["users"] == ["default"] and plain["ssh_authorized_keys"] == [KEY] and plain["ssh_pwauth"] is False


def test_text_never_breaks_out_of_its_field() -> None:
    """A key comment with YAML and JSON specials stays one string of the seed."""
    tricky = KEY.rsplit(" ", 1)[0] + ' me"}: [x] #not-a-comment'
    files = seed_files(FirstBoot("web", "iid", "admin", (tricky,)))
    users = config(files)["users"]
    assert isinstance(users, list) and users[1]["ssh_authorized_keys"] == [tricky]


def test_the_seed_is_a_cidata_iso_cloud_init_reads(tmp_path: Path) -> None:
    files = seed_files(FirstBoot("web", "iid", "admin", (KEY,)))
    path = tmp_path / "seed.iso"
    path.write_bytes(seed_iso(files))
    assert path.read_bytes()[0x8001:0x8006] == b"CD001"
    assert path.read_bytes()[0x8028:0x802E] == b"cidata"  # the volume label NoCloud looks for
    assert read_seed(path) == files
    clone = reseeded(read_seed(path), "web2", "iid-new")
    assert json.loads(clone["meta-data"]) == {"instance-id": "iid-new", "local-hostname": "web2"}
    assert config(clone)["hostname"] == "web2" and config(clone)["users"] == config(files)["users"]
    with pytest.raises(InvalidInput, match="not made by Corral"):
        reseeded({"meta-data": b"instance-id: x\n", "user-data": b"#cloud-config\nusers: []\n"}, "a", "b")


@pytest.mark.parametrize(("line", "message"), [
    ("-----BEGIN OPENSSH PRIVATE KEY-----", "private key"),
    ("ssh-ed25519", "not an SSH public key"),
    ("ssh-foo AAAA me", "not an SSH public key"),
    ("ssh-ed25519 AAAA!! me", "not an SSH public key"),
    ("ssh-ed25519 AAAA me\x07", "not an SSH public key"),
])
def test_only_public_keys_are_taken(line: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_ssh_key(line)


def test_key_files_users_and_passwords_are_checked() -> None:
    assert parse_key_file(f"# mine\n\n{KEY}\n", "keys") == (KEY,)
    with pytest.raises(InvalidInput, match="keys, line 2: not an SSH public key"):
        parse_key_file(f"{KEY}\nhello\n", "keys")
    with pytest.raises(InvalidInput, match="holds no SSH public key"):
        parse_key_file("# nothing\n", "keys")
    for user in ("root", "Admin", "a b", "<x>", "x" * 33):
        with pytest.raises(InvalidInput):
            FirstBoot("web", "iid", user)
    with pytest.raises(InvalidInput, match="crypt"):
        FirstBoot("web", "iid", "admin", (), "hunter2")
    with pytest.raises(InvalidInput, match="--user"):
        FirstBoot("web", "iid", None, (), HASH)
    # The spec (CLI, spec files, API) checks the same, before anything is made.
    with pytest.raises(InvalidInput, match="invalid user name"):
        GuestSpec("web", "debian", user="Web Admin")
    spec = spec_from_mapping({"name": "web", "image": "debian", "user": "admin", "ssh_keys": [KEY]})
    assert spec.user == "admin" and spec.ssh_keys == (KEY,)
    with pytest.raises(InvalidInput, match="ssh_keys"):
        spec_from_mapping({"name": "web", "image": "debian", "ssh_keys": KEY})


def test_the_cli_refuses_a_missing_or_bad_key_file_before_anything_is_made(tmp_path: Path) -> None:
    env = {**os.environ, "CORRAL_DATA_DIR": str(tmp_path / "data"), "CORRAL_CONFIG": str(tmp_path / "none.toml"),
           "CORRAL_LIBVIRT_URI": "qemu+unix:///system?socket=/nonexistent/libvirt-sock"}
    missing = subprocess.run([CORRAL_BIN, "create", "web", "--image", "debian", "--ssh-key", str(tmp_path / "nope")],
                             capture_output=True, text=True, check=False, env=env)
    assert missing.returncode == 2 and missing.stderr.startswith("corral: error:")
    assert "nope" in missing.stderr and "libvirt" not in missing.stderr
    private = tmp_path / "id"
    private.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n")
    bad = subprocess.run([CORRAL_BIN, "create", "web", "--image", "debian", "--ssh-key", str(private)],
                         capture_output=True, text=True, check=False, env=env)
    assert bad.returncode == 2 and "private key" in bad.stderr
    assert not (tmp_path / "data" / "guests").exists()
