"""A stage's outputs are replaced all together or not at all, and never cut in two by a signal."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from mnist_basics import atomic
from mnist_basics.errors import UserError


@pytest.fixture
def ctrl_c_raises(monkeypatch: pytest.MonkeyPatch):
    """Ctrl-C raises KeyboardInterrupt, as in a terminal: a job started in the background by a
    non-interactive shell inherits SIGINT ignored. No output is replaced yet."""
    monkeypatch.setattr(atomic, "replaced", [])
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def _old_outputs(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(b"old plot")
    (tmp_path / "logits").write_bytes(b"old logits")
    (tmp_path / "model").write_bytes(b"old model")
    return tmp_path / "logits", tmp_path / "model"


def _files(tmp_path: Path) -> dict[str, bytes]:
    return {
        p.relative_to(tmp_path).as_posix(): p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file()
    }


def test_a_failure_on_the_last_output_leaves_every_output_as_it_was(tmp_path: Path) -> None:
    """The train stage writes the logits, then the model: a full disk on the model must not
    leave new logits beside the old model."""
    logits, model = _old_outputs(tmp_path)
    before = _files(tmp_path)
    with pytest.raises(OSError), atomic.together():
        with atomic.atomic_path(tmp_path / "plots", is_dir=True) as tmp:
            (tmp / "a.png").write_bytes(b"new plot")
        atomic.write_bytes(logits, b"new logits")
        with atomic.atomic_path(model):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert _files(tmp_path) == before  # and no temporary left


def test_a_group_that_succeeds_replaces_every_output(tmp_path: Path) -> None:
    logits, model = _old_outputs(tmp_path)
    with atomic.together():
        with atomic.atomic_path(tmp_path / "plots", is_dir=True) as tmp:
            (tmp / "a.png").write_bytes(b"new plot")
            (tmp / "b.png").write_bytes(b"another")
        atomic.write_bytes(logits, b"new logits")
        atomic.write_bytes(model, b"new model")
    assert _files(tmp_path) == {
        "plots/a.png": b"new plot",
        "plots/b.png": b"another",
        "logits": b"new logits",
        "model": b"new model",
    }


def test_a_file_that_comes_after_its_folder_was_written_stops_the_group(tmp_path: Path) -> None:
    """Inside a group the folder is renamed only when the last output is written: a file the
    user drops in meanwhile would go with the old folder."""
    _, model = _old_outputs(tmp_path)
    with (
        pytest.raises(UserError, match=r"notes.txt: not a file this stage writes"),
        atomic.together(),
    ):
        with atomic.atomic_path(tmp_path / "plots", is_dir=True) as tmp:
            (tmp / "a.png").write_bytes(b"new plot")
        (tmp_path / "plots" / "notes.txt").write_text("mine")  # while the model is written
        atomic.write_bytes(model, b"new model")
    assert (tmp_path / "plots" / "notes.txt").read_text() == "mine"
    assert model.read_bytes() != b"new model"


@pytest.mark.parametrize("mine", ["notes.txt", "sub/notes.txt", "link"])
def test_a_file_the_stage_did_not_write_stops_the_folder_swap(tmp_path: Path, mine: str) -> None:
    """A folder output is replaced whole: a user's file in it would be lost with the old folder.
    The whole group keeps its old outputs, and the file stays."""
    logits, _ = _old_outputs(tmp_path)
    user_file = tmp_path / "plots" / mine
    user_file.parent.mkdir(exist_ok=True)
    if mine == "link":
        user_file.symlink_to(tmp_path / "model")
    else:
        user_file.write_text("mine")
    before = _files(tmp_path)
    with pytest.raises(UserError) as e, atomic.together():
        atomic.write_bytes(logits, b"new logits")
        with atomic.atomic_path(tmp_path / "plots", is_dir=True) as tmp:
            (tmp / "a.png").write_bytes(b"new plot")
    assert str(e.value).startswith(f"{user_file}: not a file this stage writes, in its output")
    assert _files(tmp_path) == before  # and no temporary left
    assert os.path.lexists(user_file)


def test_ctrl_c_during_the_renames_waits_until_they_are_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c_raises: None
) -> None:
    """A folder output is removed, then replaced: Ctrl-C between the two would lose it."""
    _, model = _old_outputs(tmp_path)
    real = atomic._swap_in

    def rename_then_ctrl_c(tmp: Path, target: Path) -> Path | None:
        old = real(tmp, target)
        signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C now
        return old

    monkeypatch.setattr(atomic, "_swap_in", rename_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt), atomic.together():
        with atomic.atomic_path(tmp_path / "plots", is_dir=True) as tmp:
            (tmp / "a.png").write_bytes(b"new plot")
        atomic.write_bytes(model, b"new model")
    assert atomic.replaced == [tmp_path / "plots", model]  # the stage says they are all new
    assert _files(tmp_path) == {
        "plots/a.png": b"new plot",
        "logits": b"old logits",
        "model": b"new model",
    }
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_one_output_alone_is_renamed_with_signals_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c_raises: None
) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_bytes(b"old")
    real = atomic.remove

    def remove_then_ctrl_c(path: Path) -> None:
        real(path)
        if path.parent == tmp_path and (tmp_path / "out" / "x").read_bytes() == b"new":
            signal.raise_signal(signal.SIGINT)  # as the swapped-out old folder is removed

    monkeypatch.setattr(atomic, "remove", remove_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt), atomic.atomic_path(tmp_path / "out", is_dir=True) as tmp:
        (tmp / "x").write_bytes(b"new")
    assert atomic.replaced == [tmp_path / "out"]
    assert _files(tmp_path) == {"out/x": b"new"}


def test_a_left_temporary_is_ignored_by_git(tmp_path: Path) -> None:
    """A `kill -9` can leave one beside an output until the stage runs again (dvc repro may find
    it up to date): `git add -A` must not commit it, and a user's own file stays visible."""
    root = Path(__file__).resolve().parents[1]
    left = atomic.temporary(root / "data" / "tensors")
    mine = root / "data" / ".tensors.my backup.tmp"
    r = subprocess.run(
        ["git", "check-ignore", "--no-index", "--", str(left), str(mine)],
        cwd=root, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.stdout.split() == [str(left)], r.stderr


def test_clear_stale_removes_only_the_temporaries_atomic_path_makes(tmp_path: Path) -> None:
    """A user's own `.train.my backup.tmp` beside an output is theirs, not a stale temporary."""
    target = tmp_path / "train"
    mine = tmp_path / ".train.my backup.tmp"
    mine.write_bytes(b"mine")
    with atomic.atomic_path(target) as tmp:
        stale = tmp  # the name a run killed here (`kill -9`) leaves behind
        tmp.write_bytes(b"half")
        (tmp_path / "left").write_bytes(b"half")
    (tmp_path / "left").rename(stale)
    atomic.clear_stale(target)
    assert mine.read_bytes() == b"mine"
    assert not stale.exists()


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_safetensors_outputs_follow_the_umask(tmp_path: Path, umask: int) -> None:
    """safetensors writes 0600: an output must get the mode of any other file the user makes."""
    import numpy as np
    from safetensors.numpy import save_file

    old = os.umask(umask)
    try:
        with atomic.atomic_path(tmp_path / "model.safetensors") as tmp:
            save_file({"w": np.zeros(2)}, str(tmp))
        with atomic.atomic_path(tmp_path / "tensors", is_dir=True) as tmp:
            save_file({"w": np.zeros(2)}, str(tmp / "train.safetensors"))
    finally:
        os.umask(old)
    for f in (tmp_path / "model.safetensors", tmp_path / "tensors/train.safetensors"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask, f


def test_a_folder_output_is_swapped_in_never_missing(tmp_path: Path, monkeypatch) -> None:
    """A folder cannot be renamed over a folder; removing the old one first would leave a
    moment (a kill -9) with neither. The two are exchanged in one step, then the old removed."""
    target = tmp_path / "tensors"
    target.mkdir()
    (target / "train.safetensors").write_text("old")
    removed: list[tuple[Path, bool]] = []
    real_remove = atomic.remove

    def watched(path: Path) -> None:
        removed.append((path, (target / "train.safetensors").read_text() == "new"))
        real_remove(path)

    monkeypatch.setattr(atomic, "remove", watched)
    with atomic.atomic_path(target, is_dir=True) as tmp:
        (tmp / "train.safetensors").write_text("new")
    assert (target / "train.safetensors").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["tensors"]
    assert all(p != target and new_in_place for p, new_in_place in removed), removed


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mounted on a folder, as a container's volume is."""
    target = tmp_path / "volume"
    target.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)],
                       capture_output=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_an_output_that_is_a_mount_point_is_refused_before_any_rename(
    tmp_path: Path, mount_point: Path
) -> None:
    """The swap fails there (EBUSY): taken for a kernel without it, the old folder's files
    were removed, and the outputs renamed before it were already the new run's."""
    (mount_point / "a.bin").write_text("old")
    first = tmp_path / "metrics.json"
    first.write_text("old")
    refused = pytest.raises(UserError, match=r"volume: a mount point, which a run cannot replace")
    with refused, atomic.together():
        with atomic.atomic_path(first) as tmp:
            tmp.write_text("new")
        with atomic.atomic_path(mount_point, is_dir=True) as tmp:
            (tmp / "a.bin").write_text("new")
    assert first.read_text() == "old" and (mount_point / "a.bin").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "volume"]


@pytest.fixture
def bind(tmp_path: Path) -> Iterator[Callable[[Path, Path], None]]:
    """`mount --bind`, from the same disk: its device number is its parent's."""
    done: list[Path] = []

    def mount(source: Path, target: Path) -> None:
        r = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"cannot bind-mount here: {r.stderr.decode().strip()}")
        done.append(target)

    yield mount
    for target in reversed(done):
        subprocess.run(["umount", str(target)], check=True)


def test_a_bind_mount_on_an_output_or_inside_a_folder_output_is_refused(
    tmp_path: Path, bind: Callable[[Path, Path], None]
) -> None:
    """A same-disk bind (`docker -v dir:/app/models/model.safetensors`) is no mount point to
    os.path.ismount; one inside a folder output goes out with the old folder, its files
    removed with it."""
    (tmp_path / "vol.bin").write_text("old")
    model = tmp_path / "model.bin"
    model.write_text("")
    bind(tmp_path / "vol.bin", model)
    plots = tmp_path / "plots"
    (plots / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("mine")
    bind(tmp_path / "elsewhere", plots / "sub")
    first = tmp_path / "metrics.json"
    first.write_text("old")
    for target, what in ((model, "a mount point"), (plots, "a folder that holds a mount point")):
        with pytest.raises(UserError, match=f"^{target}: {what}"), atomic.together():
            with atomic.atomic_path(first) as tmp:
                tmp.write_text("new")
            with atomic.atomic_path(target, is_dir=target.is_dir()) as tmp:
                (tmp / "sub" / "keep.txt" if target.is_dir() else tmp).parent.mkdir(
                    parents=True, exist_ok=True
                )
                (tmp / "sub" / "keep.txt" if target.is_dir() else tmp).write_text("new")
    assert first.read_text() == "old" and model.read_text() == "old"
    assert (plots / "sub" / "keep.txt").read_text() == "mine"


def test_a_failed_swap_removes_nothing(mount_point: Path) -> None:
    """Only a kernel or file system without the swap falls back to remove-then-rename."""
    (mount_point / "a.bin").write_text("old")
    new = mount_point.with_name("new")
    new.mkdir()
    with pytest.raises(OSError, match="Device or resource busy"):
        atomic._swap_in(new, mount_point)
    assert (mount_point / "a.bin").read_text() == "old"


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_a_safetensors_file_replaced_while_read_is_read_whole_as_it_was_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, framework: str
) -> None:
    """train renames a model over the one serve or predict reads: the header, metadata and data
    all come from the file as opened, never the old header with the new file's data."""
    import numpy as np
    from safetensors.numpy import save

    path, new = tmp_path / "model.safetensors", tmp_path / "new.safetensors"
    path.write_bytes(save({"w": np.zeros(2, np.float32)}, {"spec": "old"}))
    new.write_bytes(save({"w": np.ones(5000, np.float32)}, {"spec": "new"}))
    real_open = atomic.open_regular

    def replaced_once_open(p: Path) -> BinaryIO:
        f = real_open(p)
        if new.exists():
            os.replace(new, path)
        return f

    monkeypatch.setattr(atomic, "open_regular", replaced_once_open)
    arrays, meta = atomic.read_safetensors(path, "a model", "train", ("w",), framework)
    assert meta == {"spec": "old"} and np.asarray(arrays["w"]).tolist() == [0.0, 0.0]
    assert not new.exists()


def test_an_empty_folder_in_a_folder_output_stops_the_swap(tmp_path: Path) -> None:
    """Another mount namespace's mount point (a container's volume) is an empty folder here:
    gone with the old folder, the kernel detaches that mount, and its files with it."""
    target = tmp_path / "plots"
    (target / "sub").mkdir(parents=True)
    (target / "a.png").write_text("old")
    refused = pytest.raises(UserError, match=r"sub: not a folder this stage writes.*unmount")
    with refused, atomic.atomic_path(target, is_dir=True) as tmp:
        (tmp / "a.png").write_text("new")
    assert (target / "sub").is_dir() and (target / "a.png").read_text() == "old"


def test_an_output_that_is_a_link_to_a_mount_point_is_replaced(
    tmp_path: Path, mount_point: Path
) -> None:
    """A rename replaces the link itself, wherever it points."""
    (mount_point / "a.bin").write_text("old")
    link = tmp_path / "out"
    link.symlink_to(mount_point)
    atomic.write_text(link, "new")
    assert not link.is_symlink() and link.read_text() == "new"
    assert (mount_point / "a.bin").read_text() == "old"


def test_a_folder_output_that_is_a_broken_link_is_replaced(tmp_path: Path) -> None:
    """`exists()` is False for a dangling link: the folder was renamed onto it (ENOTDIR) after
    the group's other outputs were already the new run's."""
    first, plots = tmp_path / "metrics.json", tmp_path / "plots"
    first.write_text("old")
    plots.symlink_to(tmp_path / "gone")
    with atomic.together():
        atomic.write_text(first, "new")
        with atomic.atomic_path(plots, is_dir=True) as tmp:
            (tmp / "a.png").write_text("new")
    assert first.read_text() == "new" and (plots / "a.png").read_text() == "new"
    assert not plots.is_symlink()


def test_a_rename_that_fails_after_others_puts_them_back(tmp_path: Path) -> None:
    """A group's outputs are one run's: one rename failing after others undoes those."""
    first, second = tmp_path / "metrics.json", tmp_path / "model.bin"
    first.write_text("old")
    (second / "in-the-way").mkdir(parents=True)  # a file is never swapped with a folder
    atomic.replaced.clear()
    with pytest.raises(IsADirectoryError), atomic.together():
        atomic.write_text(first, "new")
        atomic.write_text(second, "new")
    assert atomic.replaced == []
    assert first.read_text() == "old" and os.listdir(second) == ["in-the-way"]
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "model.bin"]  # no temporary left


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[Path]:
    """An overlayfs whose lower layer holds a folder output, as a container image's project:
    a folder of the lower layer cannot be renamed (EXDEV)."""
    layers = {n: tmp_path / n for n in ("lower", "upper", "work", "merged")}
    for d in layers.values():
        d.mkdir()
    (layers["lower"] / "plots").mkdir()
    (layers["lower"] / "plots" / "a.png").write_text("old")
    (layers["lower"] / "metrics.json").write_text("old")
    opts = "lowerdir={lower},upperdir={upper},workdir={work}".format(**layers)
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(layers["merged"])],
                       capture_output=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount an overlayfs here: {r.stderr.decode().strip()}")
    try:
        yield layers["merged"]
    finally:
        subprocess.run(["umount", str(layers["merged"])], check=True)


def test_a_folder_that_cannot_be_renamed_leaves_the_groups_files_as_they_were(
    overlay: Path,
) -> None:
    """On overlayfs a lower layer's folder gives EXDEV, after the group's files were renamed."""
    atomic.replaced.clear()
    with pytest.raises(OSError, match="Invalid cross-device link"), atomic.together():
        atomic.write_text(overlay / "metrics.json", "new")
        with atomic.atomic_path(overlay / "plots", is_dir=True) as tmp:
            (tmp / "a.png").write_text("new")
    assert atomic.replaced == []
    assert (overlay / "metrics.json").read_text() == "old"
    assert (overlay / "plots" / "a.png").read_text() == "old"
    assert sorted(os.listdir(overlay)) == ["metrics.json", "plots"]


@pytest.fixture
def immutable(tmp_path: Path) -> Iterator[Path]:
    """An old folder output holding a file nobody may remove, root neither (chattr +i): as a
    tree a `sudo dvc repro` left is to its user."""
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "a.png").write_text("old")
    r = subprocess.run(["chattr", "+i", str(plots / "a.png")], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot make a file immutable here: {r.stderr.decode().strip()}")
    yield plots
    for left in tmp_path.rglob("a.png"):
        subprocess.run(["chattr", "-i", str(left)], check=True)


def test_an_old_folder_that_cannot_be_removed_is_a_warning_and_the_run_stands(
    immutable: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The new outputs are all in place before the old ones are removed: a failure to remove
    one loses nothing, so the run stands; its user is told where the old one is left."""
    model = immutable.with_name("model")
    model.write_text("old")
    atomic.replaced.clear()
    with atomic.together():
        atomic.write_text(model, "new")
        with atomic.atomic_path(immutable, is_dir=True) as tmp:
            (tmp / "a.png").write_text("new")
    assert model.read_text() == "new" and (immutable / "a.png").read_text() == "new"
    [left] = immutable.parent.glob(".plots.*.tmp")
    assert (left / "a.png").read_text() == "old"
    assert caplog.messages == [
        f"the old {immutable} is left at {left} (Operation not permitted); remove it once "
        "nothing holds it open (with sudo if a sudo run made it)"
    ]
    atomic.clear_stale(immutable)  # the next run tries again, and says so again
    assert len(caplog.messages) == 2 and left.exists()
    atomic.replaced.clear()


@pytest.fixture
def fuse(tmp_path: Path) -> Iterator[Path]:
    """A pass-through FUSE mount (tests/loopback_fs.py): no RENAME_EXCHANGE, as NFS and sshfs."""
    pytest.importorskip("fuse", reason="fusepy (the dev extra) is not installed")
    if not Path("/dev/fuse").exists():
        pytest.skip("no /dev/fuse here")
    (tmp_path / "disk").mkdir()
    (mounted := tmp_path / "mnt").mkdir()
    script = Path(__file__).with_name("loopback_fs.py")
    command = [sys.executable, str(script), str(tmp_path / "disk"), str(mounted)]
    fs = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            if os.path.ismount(mounted) or fs.poll() is not None:
                break
            time.sleep(0.05)
        if not os.path.ismount(mounted):
            pytest.skip(f"cannot mount a FUSE file system here: {fs.stderr.read().decode()}")
        yield mounted
    finally:
        subprocess.run(["fusermount", "-u", str(mounted)], capture_output=True)
        fs.wait(10)


def test_where_folders_cannot_be_swapped_a_file_held_open_loses_nothing(fuse: Path) -> None:
    """Without the swap the old folder goes aside, the new one in, and the old one is removed
    last: removing it first failed on a file a reader held open (NFS keeps it as .nfs*, FUSE
    as .fuse_hidden*), and the new folder was thrown away too, so neither was left."""
    tensors = fuse / "tensors"
    tensors.mkdir()
    (tensors / "train.bin").write_text("old train")
    (tensors / "valid.bin").write_text("old valid")
    probe_a, probe_b = fuse / "a", fuse / "b"
    probe_a.mkdir(), probe_b.mkdir()
    assert not atomic._exchange(probe_a, probe_b)  # EINVAL: the fallback is what runs
    atomic.replaced.clear()
    with open(tensors / "train.bin", "rb"):  # a notebook reading it meanwhile
        with atomic.atomic_path(tensors, is_dir=True) as tmp:
            (tmp / "train.bin").write_text("new train")
            (tmp / "valid.bin").write_text("new valid")
        assert (tensors / "train.bin").read_text() == "new train"
        assert (tensors / "valid.bin").read_text() == "new valid"
    atomic.replaced.clear()


def test_a_fifo_where_a_folder_output_goes_is_replaced_and_leaves_no_temporary(
    tmp_path: Path,
) -> None:
    os.mkfifo(tmp_path / "plots")
    with atomic.atomic_path(tmp_path / "plots", is_dir=True) as tmp:
        (tmp / "a.png").write_text("new")
    assert os.listdir(tmp_path) == ["plots"] and (tmp_path / "plots" / "a.png").exists()
    atomic.replaced.clear()


def _group_whose_second_rename_fails(tmp_path: Path) -> tuple[Path, Path]:
    first, second = tmp_path / "metrics.json", tmp_path / "model.bin"
    first.write_text("old")
    (second / "in-the-way").mkdir(parents=True)  # a file is never swapped with a folder
    with atomic.together():
        atomic.write_text(first, "new")
        atomic.write_text(second, "new")
    return first, second


def test_a_signal_during_renames_that_fail_leaves_the_failure_to_be_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c_raises: None
) -> None:
    """Ctrl-C held back during the renames was raised after a failed one, in place of its
    error: the stage then said "all are new" of outputs that were put back."""
    real = atomic._swap_in

    def swap_in_then_ctrl_c(tmp: Path, target: Path) -> Path | None:
        old = real(tmp, target)
        signal.raise_signal(signal.SIGINT)
        return old

    monkeypatch.setattr(atomic, "_swap_in", swap_in_then_ctrl_c)
    with pytest.raises(IsADirectoryError):
        _group_whose_second_rename_fails(tmp_path)
    assert atomic.replaced == [] and (tmp_path / "metrics.json").read_text() == "old"


def test_old_versions_that_could_not_be_put_back_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ctrl_c_raises: None
) -> None:
    """No file system here fails a rename back (the fault is made): the old version is left
    under its temporary name, which the stage's line names, since the next run removes it."""

    def cannot(target: Path, old: Path | None) -> None:
        raise OSError(errno.EIO, "Input/output error", str(target))

    monkeypatch.setattr(atomic, "_put_back", cannot)
    monkeypatch.setattr(atomic, "not_put_back", [])
    with pytest.raises(IsADirectoryError):
        _group_whose_second_rename_fails(tmp_path)
    [(target, old)] = atomic.not_put_back
    assert atomic.replaced == [target] == [tmp_path / "metrics.json"]
    assert target.read_text() == "new" and old.read_text() == "old"


def test_a_closed_terminal_stops_a_stage_as_ctrl_c_does(ctrl_c_raises: None) -> None:
    """SIGHUP ended the stage at once, between two renames too, with no word and no clean-up."""
    old = {s: signal.getsignal(s) for s in atomic.SIGNALS}
    atomic.handle_signals()
    try:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGHUP)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def test_an_old_version_whose_rename_back_fails_too_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no swap, the old version goes aside first; if the new one's rename in and
    the old one's rename back both fail (the fault is made), neither is at the target, and where
    the old one is went untold."""
    target = tmp_path / "model.bin"
    target.write_text("old")
    real, calls = os.rename, []

    def rename(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) > 1:  # the old one aside works; the new one in and the old one back fail
            raise OSError(errno.EIO, "Input/output error", str(dst))
        real(src, dst)

    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(atomic, "not_put_back", [])
    with pytest.raises(OSError, match="Input/output"):
        atomic.write_text(target, "new")
    [(named, old)] = atomic.not_put_back
    assert named == target and not target.exists() and old.read_text() == "old"
    assert atomic.replaced == []


def test_a_file_where_a_folder_output_goes_is_not_swapped_away(tmp_path: Path) -> None:
    """A user's file at a folder output's path was swapped out and removed, with exit 0."""
    notes = tmp_path / "plots"
    notes.write_text("my notes")
    with (
        pytest.raises(UserError, match="a file where this stage writes a folder"),
        atomic.atomic_path(notes, is_dir=True) as tmp,
    ):
        (tmp / "a.png").write_text("new")
    assert notes.read_text() == "my notes" and os.listdir(tmp_path) == ["plots"]
    assert atomic.replaced == []
    notes.unlink()
    (tmp_path / "plots" / "metrics").mkdir(parents=True)  # a folder output, of a folder
    (tmp_path / "plots" / "metrics" / "valid").write_text("my notes")  # where that one goes
    with (
        pytest.raises(UserError, match="valid: a file where this stage writes a folder, in its"),
        atomic.atomic_path(tmp_path / "plots", is_dir=True) as tmp,
    ):
        (tmp / "metrics" / "valid").mkdir(parents=True)
        (tmp / "metrics" / "valid" / "a.tsv").write_text("new")
    assert (tmp_path / "plots" / "metrics" / "valid").read_text() == "my notes"
    assert os.listdir(tmp_path) == ["plots"]


def test_a_users_file_name_in_a_refusal_forges_no_line(tmp_path: Path) -> None:
    """The stage's error is one line: a newline in the name of the user's file it names is
    shown as \\n, not a line of the stage's own (`train: ...`)."""
    out = tmp_path / "plots"
    (out / "metrics").mkdir(parents=True)
    (out / "metrics" / "x\ntrain: done").write_text("mine")
    with (
        pytest.raises(UserError) as e,
        atomic.atomic_path(out, is_dir=True) as tmp,
    ):
        (tmp / "metrics").mkdir()
    assert "metrics/x\\ntrain: done: not a file this stage writes" in str(e.value)
    assert "\n" not in str(e.value)
    assert (out / "metrics" / "x\ntrain: done").read_text() == "mine"


def test_a_second_signal_pending_with_the_first_is_no_traceback() -> None:
    """Ctrl-C and at once a SIGTERM: the first's handler set SIG_IGN while the second was
    pending, and Python raised OSError ("Signal 15 ignored due to race condition")."""
    code = (
        "import os, signal\n"
        "from mnist_basics import atomic\n"
        "atomic.handle_signals()\n"
        "both = {signal.SIGINT, signal.SIGTERM}\n"
        "signal.pthread_sigmask(signal.SIG_BLOCK, both)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "try:\n"
        "    signal.pthread_sigmask(signal.SIG_UNBLOCK, both)\n"
        "    sum(range(1000))\n"
        "except KeyboardInterrupt:\n"
        "    sum(range(1000))  # the second is handled here\n"
        "    print('interrupted once')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, "interrupted once\n", "")


def test_a_signal_ignored_from_the_start_stays_ignored(tmp_path: Path) -> None:
    """Under nohup a logout's SIGHUP stopped the stage (exit 130, no output), as Ctrl-C."""
    code = (
        "import os, signal, time\n"
        "from mnist_basics import atomic\n"
        "atomic.handle_signals()\n"
        "with atomic.signals_held():\n"
        "    os.kill(os.getpid(), signal.SIGHUP)\n"
        "os.kill(os.getpid(), signal.SIGHUP)\n"
        "time.sleep(0.2)\n"
        "print('trained on')\n"
    )
    run = subprocess.run(
        ["nohup", sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert (run.returncode, run.stdout) == (0, "trained on\n"), run.stderr
    plain = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert plain.returncode != 0 and "KeyboardInterrupt" in plain.stderr
