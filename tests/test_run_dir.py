"""The run folder's pieces against what a kill, a second process or a hostile file leaves behind: the
folder lock, stale temporary files, a cut-off log line, file permissions, weights-only loading."""

import collections
import datetime
import errno
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import warnings
import zipfile

import pytest
import torch
from cli_helpers import lock_held_elsewhere

from autogan_fast.errors import UsageError
from autogan_fast.runs.checkpoint import TEMP_NAME, atomic_write, load_checkpoint, save_checkpoint, write_json
from autogan_fast.runs.folder import LOCK, JsonlLog, RunLock, create_run_dir, locked_run_dir
from autogan_fast.safe_load import load_weights_only


@pytest.fixture()
def lock_holder(tmp_path):
    with lock_held_elsewhere(tmp_path) as holder:
        yield holder


# --------------------------------------------------------------------------------------------- the lock

def test_a_locked_folder_is_refused_naming_the_holder(tmp_path, lock_holder):
    refusal = rf"{tmp_path} is in use by another run \(pid {lock_holder.pid} on "
    with pytest.raises(UsageError, match=refusal), locked_run_dir(tmp_path):
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, lock_holder):
    lock_holder.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the lock with the process
    lock_holder.wait()
    assert (tmp_path / LOCK).exists()  # the file stays; the lock does not
    with locked_run_dir(tmp_path):
        assert (tmp_path / LOCK).read_text().split()[0] == str(os.getpid())


def test_the_lock_is_held_until_the_block_ends(tmp_path):
    with locked_run_dir(tmp_path), pytest.raises(UsageError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()  # another open of the lock file conflicts
    with locked_run_dir(tmp_path):  # released: taken again
        pass


@pytest.mark.parametrize("make_lock, refusal", [
    # a link to a file the user owns: following it would truncate that file and write "pid host" into it
    (lambda lock, victim: lock.symlink_to(victim), "is a symbolic link, not a lock file"),
    # a FIFO is no file to lock or write a pid into (and opening one for reading can wait for ever)
    (lambda lock, victim: os.mkfifo(lock), "is not a regular file"),
], ids=["symlink", "fifo"])
def test_a_lock_that_is_not_a_regular_file_is_refused_and_nothing_is_written(tmp_path, make_lock, refusal):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    make_lock(run / LOCK, victim)
    with pytest.raises(UsageError, match=rf"cannot lock run folder {run}: {run / LOCK} {refusal}"), \
            locked_run_dir(run):
        pass
    assert victim.read_text() == "keep me\n"


def test_taking_the_lock_removes_stale_temporary_files_only(tmp_path):
    """A kill during `atomic_write` leaves its temporary file; the next holder of the lock removes those,
    and nothing else."""
    (tmp_path / "samples").mkdir()
    stale = [tmp_path / ".checkpoint.pt.k2j3h4g5.tmp", tmp_path / ".log.jsonl.a_b9x0yz.tmp",
             tmp_path / "samples" / ".iter_000.png.qwertyui.tmp"]
    kept = [tmp_path / "checkpoint.pt", tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "samples" / "x.png",
            tmp_path / ".checkpoint.pt.tmp"]  # no random part: not a name atomic_write makes
    for path in stale + kept:
        path.write_bytes(b"x")
    with locked_run_dir(tmp_path):
        pass
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in kept)


# --------------------------------------------------------------------------------------------- atomic writes

def test_atomic_writes_get_the_permissions_of_ordinary_files(tmp_path):
    """mkstemp makes 0600 files; a run folder's files should all follow the umask, like log.jsonl."""
    old = os.umask(0o027)
    try:
        with open(tmp_path / "plain", "w"):
            pass
        write_json(tmp_path / "result.json", {"a": 1})
        save_checkpoint(tmp_path / "checkpoint.pt", {"format": "x"})
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"plain": 0o640, "result.json": 0o640, "checkpoint.pt": 0o640}


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    write_json(tmp_path / "result.json", {"a": 1})

    def fail(handle):
        handle.write(b"half")
        temporary = [p.name for p in tmp_path.iterdir() if p.name != "result.json"]
        assert len(temporary) == 1 and TEMP_NAME.fullmatch(temporary[0])  # what a resume would remove
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "result.json", fail)
    assert json.loads((tmp_path / "result.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def no_space(handle):
    handle.write(b"half")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_is_a_usage_error_and_leaves_the_old_file(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", {"format": "x"})
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(UsageError, match=r"checkpoint.pt: No space left on device; the previous checkpoint.pt is "
                                         r"intact"):
        atomic_write(tmp_path / "checkpoint.pt", no_space)
    with pytest.raises(UsageError, match=r"new.json: No space left on device; nothing was written"):
        atomic_write(tmp_path / "new.json", no_space)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


class FillingDisk:
    """A file that takes `room` bytes, then refuses every write as a full disk does."""

    def __init__(self, handle, room: int):
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def test_a_full_disk_inside_torch_save_is_the_full_disk_message(tmp_path):
    """torch.save turns the OSError of a refused write into its zip writer's "unexpected pos" RuntimeError
    (raised on closing the archive): that is still a full disk, and says so."""
    save_checkpoint(tmp_path / "checkpoint.pt", {"format": "x"})
    before = (tmp_path / "checkpoint.pt").read_bytes()
    state = {"format": "x", "weights": torch.zeros(10_000)}  # 40 kB: past the room after the archive's header
    with pytest.raises(UsageError, match=r"cannot write .*checkpoint.pt: No space left on device; the previous "
                                         r"checkpoint.pt is intact"):
        atomic_write(tmp_path / "checkpoint.pt", lambda f: torch.save(state, FillingDisk(f, 4096)))
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left


# Under `ulimit -f` a write past the limit fails with EFBIG (Python ignores SIGXFSZ, which would kill it).
_SAVE_PAST_FILE_SIZE_LIMIT = """
import resource, sys, torch
from autogan_fast.errors import UsageError
from autogan_fast.runs.checkpoint import save_checkpoint
resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    save_checkpoint(sys.argv[1], {"format": "x", "weights": torch.zeros(100_000)})
except UsageError as err:
    print(err)
"""


def test_a_checkpoint_past_the_file_size_limit_is_one_line_and_leaves_the_old_one(tmp_path):
    save_checkpoint(tmp_path / "checkpoint.pt", {"format": "x"})
    before = (tmp_path / "checkpoint.pt").read_bytes()
    done = subprocess.run([sys.executable, "-c", _SAVE_PAST_FILE_SIZE_LIMIT, str(tmp_path / "checkpoint.pt")],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == f"cannot write {tmp_path / 'checkpoint.pt'}: File too large; the previous checkpoint.pt " \
                          f"is intact\n"
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_run_folders_the_file_system_refuses_leave_nothing(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match=r"cannot create run folder .*file/run: Not a directory"):
        create_run_dir(str(tmp_path / "file" / "run"), {})
    with pytest.raises(UsageError, match="is a file, not a folder"):
        create_run_dir(str(tmp_path / "file"), {})

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("autogan_fast.runs.checkpoint.tempfile.mkstemp", refused)  # as in a read-only folder
    with pytest.raises(UsageError, match=r"cannot write .*config.json: Permission denied; nothing was written"):
        create_run_dir(str(tmp_path / "a" / "b"), {})
    with pytest.raises(UsageError, match=r"cannot write runs/00000/config.json: Permission denied"):
        create_run_dir(None, {})  # the default numbered folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # every folder made for the runs removed


# --------------------------------------------------------------------------------------------- the log

def test_json_files_and_the_log_are_strict_json(tmp_path):
    """JSON has no NaN or Infinity: json.dumps's bare tokens would break strict readers; null instead."""
    def refuse(token):
        raise ValueError(token)

    log = JsonlLog(tmp_path / "log.jsonl")
    log.write("shared_train", 0, d_loss=math.nan, g_loss=math.inf, best={"scores": [1.0, -math.inf]})
    write_json(tmp_path / "result.json", {"fid": math.nan, "archs": [{"inception_score": 2.5}]})
    assert json.loads(log.path.read_text(), parse_constant=refuse) == {
        "event": "shared_train", "search_iter": 0, "d_loss": None, "g_loss": None, "best": {"scores": [1.0, None]}}
    assert json.loads((tmp_path / "result.json").read_text(), parse_constant=refuse) == {
        "fid": None, "archs": [{"inception_score": 2.5}]}


def test_a_log_append_the_file_system_refuses_is_a_usage_error(tmp_path):
    log = JsonlLog(tmp_path / "missing" / "log.jsonl")
    with pytest.raises(UsageError, match=r"cannot append to .*log.jsonl: No such file or directory"):
        log.write("iteration", 0)

def write_log(path, *events, tail=b""):
    path.write_bytes(b"".join(json.dumps(e).encode() + b"\n" for e in events) + tail)


def test_a_cut_off_last_line_is_dropped_with_a_one_line_warning(tmp_path, capsys):
    log = JsonlLog(tmp_path / "log.jsonl")
    events = [{"event": "iteration", "search_iter": i} for i in range(3)]
    write_log(log.path, *events, tail=b'{"event": "shared_tr')  # a kill in the middle of an append
    assert log.read() == events
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "line 4" in err and str(log.path) in err
    log.truncate_from(2)  # what a resume does: the cut-off line goes with the redone work
    assert log.path.read_bytes() == b"".join(json.dumps(e).encode() + b"\n" for e in events[:2])


@pytest.mark.parametrize("bad", [
    b'{"event": "iter',   # a cut-off line in the middle: no kill makes that
    b"[1, 2]",            # JSON, but not an event
    b"\xff\xfe",          # not text
])
def test_a_bad_line_before_the_last_is_an_error_naming_it(tmp_path, bad):
    log = JsonlLog(tmp_path / "log.jsonl")
    write_log(log.path, {"event": "a", "search_iter": 0}, tail=bad + b"\n" + b'{"event": "b", "search_iter": 1}\n')
    before = log.path.read_bytes()
    with pytest.raises(UsageError, match=rf"{log.path} line 2 is not a logged event"):
        log.truncate_from(1)
    assert log.path.read_bytes() == before


def test_resume_drops_done_events(tmp_path):
    """A resumed run is not done: an earlier `done` goes, and the run logs its own when it ends."""
    log = JsonlLog(tmp_path / "log.jsonl", counter="iter")
    write_log(log.path, {"event": "eval", "iter": 4}, {"event": "done", "iter": 4})
    log.truncate_from(5)
    assert log.read() == [{"event": "eval", "iter": 4}]


# --------------------------------------------------------------------------------------------- weights-only loading

class Call:
    """Pickles as a call of `function(*args)`: what a malicious checkpoint holds."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def raw_pickle(protocol):
    return lambda path, payload: path.write_bytes(pickle.dumps({"format": payload}, protocol=protocol))


def torch_zip(path, payload):
    torch.save({"format": payload, "weights": torch.zeros(2)}, path)


def torch_zip_protocol_4(path, payload):
    """torch.save's zip with its data.pkl re-pickled at protocol 4 (torch reads only protocol 2's opcodes)."""
    torch_zip(path, None)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = next(name for name in members if name.endswith("/data.pkl"))
    members[data] = pickle.dumps({"format": payload}, protocol=4)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)


@pytest.mark.parametrize("write", [
    raw_pickle(2),               # a plain pickle at torch.save's protocol: torch names the global itself
    raw_pickle(4),               # pickle.dump's default: torch stops at the first protocol-4 opcode
    raw_pickle(5),
    torch_zip,                   # torch.save of an object that calls something
    torch_zip_protocol_4,
], ids=["pickle-2", "pickle-4", "pickle-5", "torch-zip", "torch-zip-protocol-4"])
def test_a_malicious_checkpoint_is_refused_naming_its_global(tmp_path, write):
    marker = tmp_path / "executed"
    path = tmp_path / "checkpoint.pt"
    write(path, Call(os.system, f"touch {marker}"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's two-line warning would be a second and third stderr line
        with pytest.raises(UsageError) as refused:
            load_checkpoint(path)
    message = str(refused.value)
    assert message.startswith(f"refusing to load checkpoint {path}: it names the global {os.system.__module__}.system")
    assert "\n" not in message and "False" not in message and "weights_only" not in message
    assert not marker.exists()


def test_a_harmless_foreign_pickle_is_corrupt_not_refused(tmp_path):
    (tmp_path / "a.pt").write_bytes(pickle.dumps({"format": [1, 2.0, "x"]}, protocol=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UsageError, match=r"corrupt checkpoint .*a\.pt: not a file torch\.save writes"):
            load_weights_only(tmp_path / "a.pt")


def test_the_scan_names_the_first_refused_global_past_allowed_ones(tmp_path):
    path = tmp_path / "c.pt"
    path.write_bytes(pickle.dumps({"ok": collections.OrderedDict(a=1), "bad": Call(os.system, "true")}, protocol=4))
    with pytest.raises(UsageError, match=rf"the global {os.system.__module__}\.system"):
        load_weights_only(path)


def test_allowed_globals_load(tmp_path):
    """`allow` adds globals; without them the file is refused, naming the one it needs."""
    torch.save({"x": datetime.timedelta(days=2)}, tmp_path / "t.pt")
    with pytest.raises(UsageError, match=r"the global datetime\.timedelta"):
        load_weights_only(tmp_path / "t.pt")
    assert load_weights_only(tmp_path / "t.pt", allow=[datetime.timedelta]) == {"x": datetime.timedelta(days=2)}
