"""The KVM probe's QMP conversation (qemu.qmp's client on a socket pair), with a real QEMU: under TCG here,
since QEMU answers query-kvm under any accelerator; KVM itself is judged in test_guests' host report."""

from __future__ import annotations

from collections.abc import Callable

from corral.adapters.accel import ask_qemu


def test_qemu_answers_over_qmp(require_tool: Callable[[str], None]) -> None:
    require_tool("qemu-system-x86_64")
    reply, stderr = ask_qemu(("-accel", "tcg"))
    assert stderr is None and reply is not None
    assert reply["enabled"] is False and isinstance(reply["present"], bool)


def test_a_qemu_that_cannot_start_says_why(require_tool: Callable[[str], None]) -> None:
    require_tool("qemu-system-x86_64")
    reply, stderr = ask_qemu(("-accel", "tcg", "-no-such-option"))
    assert reply is None and stderr is not None and "-no-such-option" in stderr


def test_a_qemu_that_does_not_answer_in_time_is_stopped(require_tool: Callable[[str], None]) -> None:
    require_tool("qemu-system-x86_64")
    assert ask_qemu(("-accel", "tcg"), timeout_s=0.001) == (None, None)
